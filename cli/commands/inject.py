"""`surgeon inject METHOD` (add a parameter-efficient method) and `surgeon strip` (remove it)."""
from __future__ import annotations

from typing import Optional

import typer

from surgeon_cli.render import console, print_json

# CLI option -> Python option name; only options given on the command line are passed on, so each
# method's own defaults (from the papers) apply to the rest, and an option a method does not take is
# refused by the method.
_OPTION_NAMES = (
    "rank", "reduction", "bottleneck", "alpha", "scaling", "targets", "placement", "location", "insertion",
    "position", "residual", "sequential_before", "train_norm", "kernel", "conv", "conv_init", "axis", "repatch",
    "bias", "num_tokens", "deep", "dist", "num_experts", "slots", "expert", "normalize",
)


def inject(
    method: str = typer.Argument(..., help="bottleneck, convpass, conformer, loaa, dense-moa, soft-moa, lora, "
                                          "prefix, prompt, bitfit, linear or full."),
    model: str = typer.Option(..., "--model", "-m", help="Model directory, alias, Hub id, or a surgery directory."),
    out: str = typer.Option(..., "--out", "-o", help="Output directory."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model of a surgery directory given as --model."),
    rank: Optional[int] = typer.Option(None, "--rank", help="LoRA rank r (wins over --reduction)."),
    reduction: Optional[float] = typer.Option(None, "--reduction", help="Reduction rate RR: width = round(d / RR)."),
    bottleneck: Optional[int] = typer.Option(None, "--bottleneck", help="Adapter width b (wins over --reduction)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="LoRA scaling numerator (scaling = alpha / RR)."),
    scaling: Optional[float] = typer.Option(None, "--scaling", help="LoRA scaling, overriding alpha / RR."),
    targets: Optional[str] = typer.Option(None, "--targets", help="LoRA projections, comma-separated: q,k,v,o."),
    placement: Optional[str] = typer.Option(None, "--placement", help="pfeiffer (one sub-layer) or houlsby (both)."),
    location: Optional[str] = typer.Option(None, "--location", help="Pfeiffer's sub-layer: mhsa or ffn."),
    insertion: Optional[str] = typer.Option(None, "--insertion", help="parallel or sequential."),
    position: Optional[str] = typer.Option(None, "--position", help="before or after the sub-layer."),
    residual: Optional[bool] = typer.Option(None, "--residual/--no-residual",
                                            help="Add the adapter's input to its output (default: sequential)."),
    sequential_before: Optional[str] = typer.Option(
        None, "--sequential-before",
        help="Sequential-before form: authors h+Sub(A(u))+A(u) (default), residual h+Sub(A(u)+u), "
             "replace h+Sub(A(u))."),
    kernel: Optional[int] = typer.Option(None, "--kernel", help="Convolution kernel (conformer 31, convpass 3)."),
    conv: Optional[str] = typer.Option(None, "--conv", help="Convpass convolution: 1d (tokens) or 2d (grid)."),
    conv_init: Optional[str] = typer.Option(None, "--conv-init",
                                            help="Convpass conv init: xavier (default) or identity (zeros + centre)."),
    axis: Optional[str] = typer.Option(None, "--axis",
                                       help="LoAA axis: time, frequency, grid (k x k), or an MHSA,FFN pair "
                                            "(default time,frequency)."),
    repatch: Optional[bool] = typer.Option(None, "--repatch/--no-repatch",
                                           help="LoAA: make overlapping patches non-overlapping."),
    bias: Optional[bool] = typer.Option(None, "--bias/--no-bias",
                                        help="LoAA: biases on its convolutions (default no)."),
    train_norm: Optional[bool] = typer.Option(None, "--train-norm/--no-train-norm",
                                              help="Adapters: train the adapted sub-layers' LayerNorms "
                                                   "(default yes; LoAA no)."),
    num_tokens: Optional[int] = typer.Option(None, "--num-tokens", help="Prompt P or prefix N tokens."),
    deep: Optional[bool] = typer.Option(None, "--deep/--shallow", help="Prompt: fresh prompts per layer."),
    dist: Optional[bool] = typer.Option(None, "--dist/--no-dist",
                                        help="Prompt on AST: keep DIST ([CLS, DIST, P, patches]) or drop it "
                                             "([CLS, P, patches], the authors')."),
    num_experts: Optional[int] = typer.Option(None, "--num-experts",
                                              help="MoA: experts per block (default 14 Pfeiffer, 7 + 7 Houlsby)."),
    slots: Optional[int] = typer.Option(None, "--slots", help="Soft-MoA: slots per expert."),
    expert: Optional[str] = typer.Option(None, "--expert", help="MoA experts: bottleneck or convpass."),
    normalize: Optional[bool] = typer.Option(None, "--normalize/--no-normalize",
                                             help="Soft-MoA: l2-normalised logits with a learnable scale."),
    full: bool = typer.Option(False, "--full", help="Save the whole model, not only the adapter. Load it with "
                              "surgeon.load: transformers' from_pretrained drops the injected modules (UNEXPECTED "
                              "keys); for a plain model use 'surgeon export DIR --as model'."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output."),
):
    """Inject a parameter-efficient method into a model and save it (the adapter only, unless --full)."""
    from surgeon.api import load, save_surgery
    from surgeon.methods import get_method
    from surgeon.methods.surgery import apply_method
    from surgeon.refs import resolve

    values = locals()
    options = {name: values[name] for name in _OPTION_NAMES if values[name] is not None}
    get_method(method)  # unknown method: refused before anything is loaded
    model_path = resolve(model)
    from surgeon.io.atomic import check_output

    check_output(out, force=force, inputs=[model_path])
    net = load(model_path, base=base)
    entry = apply_method(net, method, options)
    save_surgery(net, out, full=full, force=force, inputs=[model_path])
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    doc = {
        "method": entry["method"],
        "options": entry["options"],
        "added_parameters": entry["num_parameters"],
        "petl_parameters": entry["petl_parameters"],
        "trainable_parameters": trainable,
        **get_method(method).summary(entry["options"]),  # the MoAs: experts per block and per layer
        "out": str(out),
        "full": full,
    }
    if as_json:
        print_json(doc)
        return
    from surgeon.api import print_trainable_parameters

    con = console()
    print_trainable_parameters(net, con)
    con.print(f"wrote {'model' if full else 'adapter'} with {entry['method']} to {out}")


def strip(
    model: str = typer.Argument(..., help="A surgery directory (adapter only or --full)."),
    out: str = typer.Option(..., "--out", "-o", help="Output directory for the base model."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model of an adapter-only directory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Read a pickled base (an authors' BEATs .pt, given back as that file)."),
):
    """Remove every injected method and write the base model."""
    from surgeon.api import strip_to

    path = strip_to(model, out, base=base, force=force, allow_pickle=allow_pickle)
    if as_json:
        print_json({"out": str(path)})
        return
    console().print(f"wrote the stripped model to {path}")
