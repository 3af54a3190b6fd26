"""Every method's options, declared once, torch-free.

The methods read their table from here (`OPTIONS[name]`), the recipe schema builds `[method]` from it
(surgeon.recipes.schema) and `surgeon inject` builds its options from it (cli/commands/inject.py): an
option added here is a method option, a recipe key and a flag at once. Importing this module loads
no torch, so the CLI's start-up stays light.
"""
from __future__ import annotations

from surgeon.methods.options import Opt

SEQUENTIAL_BEFORE_FORMS = ("authors", "residual", "replace")  # surgeon.methods.placement.SEQUENTIAL_BEFORE

PLACEMENT = {
    "placement": Opt("pfeiffer", "str", ("pfeiffer", "houlsby"), "one sub-layer (Pfeiffer) or both (Houlsby)"),
    "location": Opt(None, "str", ("mhsa", "ffn"), "Pfeiffer's sub-layer (default mhsa)"),
    "insertion": Opt("parallel", "str", ("parallel", "sequential"), "beside the sub-layer or in series"),
    "position": Opt(None, "str", ("before", "after"), "adapter input: sub-layer input or output"),
    "residual": Opt(None, "bool", (), "add the adapter's input to its output (default: sequential only)"),
    "train_norm": Opt(None, "bool", (), "train each adapted sub-layer's LayerNorm (default: yes, LoAA no)"),
    "sequential_before": Opt(None, "str", SEQUENTIAL_BEFORE_FORMS,
                             "sequential-before form: authors h + Sub(A(u)) + A(u) (default), residual "
                             "h + Sub(A(u) + u), replace h + Sub(A(u))"),
}
WIDTH = {
    "bottleneck": Opt(None, "int", (), "bottleneck width b (wins over reduction)", ge=1),
    "reduction": Opt(None, "float", (), "reduction rate RR: b = round(d / RR)", gt=0),
}
MOA = {
    "num_experts": Opt(None, "int", (), "experts per MoA block (default 14 Pfeiffer, 7 + 7 Houlsby)", ge=1),
    "expert": Opt("bottleneck", "str", ("bottleneck", "convpass"), "expert design"),
    "kernel": Opt(3, "int", (), "convpass experts' kernel size", ge=1),
    "conv_init": Opt(None, "str", ("xavier", "identity"), "convpass experts' conv init (default xavier)"),
}


def _adapter(extra: dict, placement: str = "pfeiffer") -> dict:
    """An adapter method's table: width, placement (with this method's default placement), its own."""
    return {**WIDTH, **PLACEMENT, "placement": Opt(placement, "str", ("pfeiffer", "houlsby"), PLACEMENT["placement"].help),
            **extra}


OPTIONS: dict[str, dict[str, Opt]] = {
    "bottleneck": _adapter({}),
    "convpass": _adapter({
        "kernel": Opt(3, "int", (), "convolution kernel size", ge=1),
        "conv": Opt("1d", "str", ("1d", "2d"), "1-D over the token sequence or 2-D over the patch grid"),
        "conv_init": Opt("xavier", "str", ("xavier", "identity"),
                         "the conv's init: Xavier-uniform (the papers' code) or zeros plus identity centre"),
    }),
    "conformer": _adapter({"kernel": Opt(31, "int", (), "depthwise convolution kernel size", ge=1)}),
    "loaa": _adapter({
        "axis": Opt(None, "str", (), "time, frequency, grid (k x k), or MHSA,FFN axes for Houlsby "
                                     "(default time on MHSA, frequency on FFN)",
                    pattern=r"^(time|frequency|grid)(,(time|frequency|grid))?$"),
        "kernel": Opt(3, "int", (), "kernel length along the axis", ge=1),
        "bias": Opt(False, "bool", (), "biases on both convolutions (paper 004 counts none)"),
        "repatch": Opt(False, "bool", (), "make the patches non-overlapping (stride = patch size)"),
    }, placement="houlsby"),
    "dense-moa": _adapter(MOA),
    "soft-moa": _adapter({
        **MOA,
        "slots": Opt(1, "int", (), "slots p per expert", ge=1),
        "normalize": Opt(False, "bool", (), "l2-normalised logits with a learnable scale (Soft MoE's variant)"),
    }),
    "lora": {
        "rank": Opt(None, "int", (), "rank r (wins over reduction)", ge=1),
        "reduction": Opt(None, "float", (), "reduction rate RR: r = round(d / RR), default 128", gt=0),
        "alpha": Opt(8.0, "float", (), "scaling numerator: s = alpha / RR"),
        "scaling": Opt(None, "float", (), "scaling s (default alpha / RR)"),
        "targets": Opt(["q", "v"], "list", ("q", "k", "v", "o"), "projections to adapt, comma-separated"),
    },
    "prefix": {"num_tokens": Opt(24, "int", (), "N: N/2 key and N/2 value tokens per layer", ge=1)},
    "prompt": {
        "num_tokens": Opt(None, "int", (), "P prompts (default 300 shallow, 25 deep)", ge=1),
        "deep": Opt(False, "bool", (), "a fresh set of prompts at every layer", flags="--deep/--shallow"),
        "dist": Opt(None, "bool", (), "keep AST's DIST token: [CLS, DIST, P, patches] (default) or "
                                      "[CLS, P, patches] as the authors' code"),
    },
    "bitfit": {},
    "linear": {},
    "full": {},
}


def all_options() -> dict[str, list[tuple[str, Opt]]]:
    """option name -> [(method, its Opt)], in declaration order: what a recipe and the CLI may set."""
    out: dict[str, list[tuple[str, Opt]]] = {}
    for method, table in OPTIONS.items():
        for name, opt in table.items():
            out.setdefault(name, []).append((method, opt))
    return out


ADAPTERS = ("bottleneck", "convpass", "conformer", "loaa", "dense-moa", "soft-moa")  # the PLACEMENT tables


def who(methods) -> str:
    """'adapters, lora' for a list of methods: the six adapter methods named as one."""
    methods = list(dict.fromkeys(methods))
    if set(ADAPTERS) <= set(methods):
        methods = ["adapters", *[m for m in methods if m not in ADAPTERS]]
    return ", ".join(methods)


def merged_help(entries: list[tuple[str, Opt]]) -> str:
    """One help line for an option several methods take: each distinct wording once, with its methods."""
    texts: dict[str, list[str]] = {}
    for method, opt in entries:
        texts.setdefault(opt.help, []).append(method)
    if len(texts) == 1:
        return next(iter(texts))
    return "; ".join(f"{who(ms)}: {h}" for h, ms in texts.items())
