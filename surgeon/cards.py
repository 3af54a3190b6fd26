"""README.md model cards for every model directory surgeon writes (as PEFT and mergekit write them):
what the directory was made from, by which command and options, the method and its parameter
count, the metrics when it came from a run, and how to load it. The machine-readable record
(surgery.json, merge.json, export.json) stays the source of truth; the card is its human side.

Light on purpose (standard library only): the CLI imports it at start-up to note the command line.

    write_card(folder, Card(title=..., kind="surgery", made_from=[...], ...))
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

CARD_NAME = "README.md"
_COMMAND: list[str] | None = None  # the command line of this process, when it is the CLI

LOADING = {
    # kind -> how to load it (a Python snippet; {path} and {arch} are filled in)
    "model": "import transformers\n\nmodel = transformers.{arch}.from_pretrained({path!r})",
    "surgery": "import surgeon\n\nmodel = surgeon.load({path!r})  # the base, the surgery re-applied, its weights",
    "full-surgery": ("import surgeon\n\n# from_pretrained would drop the injected modules (UNEXPECTED keys):\n"
                     "model = surgeon.load({path!r})"),
    "peft": ("from peft import PeftModel\n\n# base: the model the adapter was trained on ({base})\n"
             "model = PeftModel.from_pretrained(base, {path!r})"),
}


def record_command(argv: list[str]) -> None:
    """Called by the CLI: the command line that the cards of this process name."""
    global _COMMAND
    _COMMAND = ["surgeon", *argv]


def command_line() -> str | None:
    return shlex.join(_COMMAND) if _COMMAND else None


@dataclass
class Card:
    title: str
    kind: str  # "model", "surgery", "full-surgery", "peft": how it loads
    summary: str = ""
    made_from: list[str] = field(default_factory=list)
    architecture: str | None = None
    family: str | None = None
    methods: list[dict] = field(default_factory=list)  # surgery-record entries: method, options, counts
    parameters: dict | None = None  # {"trainable": n, "total": n}
    metrics: dict | None = None  # {"test_accuracy": 0.93, ...} or a run summary {"test_accuracy": {"mean", "std", "n"}}
    base: str | None = None  # the base model, in words (PEFT adapters)
    notes: list[str] = field(default_factory=list)
    command: str | None = None  # default: this process's command line
    loading_path: str | None = None  # how the loading snippet names the directory (default: where it is written)


def render(card: Card, path: str) -> str:
    from surgeon import __version__

    tags = ["surgeon", *(m["method"] for m in card.methods), *([card.family] if card.family else [])]
    library = {"peft": "peft", "model": "transformers"}.get(card.kind, "surgeon")
    lines = ["---", f"library_name: {library}", "tags:", *(f"- {t}" for t in dict.fromkeys(tags)), "---", "",
             f"# {card.title}", ""]
    if card.summary:
        lines += [card.summary, ""]
    if card.made_from:
        lines += ["## Made from", "", *(f"- {m}" for m in card.made_from), ""]
    command = card.command or command_line()
    lines += ["## Made by", ""]
    lines += (["```", command, "```", ""] if command else ["surgeon's Python API.", ""])
    lines += [f"surgeon {__version__}.", ""]
    if card.methods:
        lines += ["## Method", "", "| method | options | added parameters | PETL parameters |", "|---|---|---|---|"]
        for m in card.methods:
            options = ", ".join(f"{k}={_value(v)}" for k, v in sorted((m.get("options") or {}).items()) if v is not None)
            lines.append(f"| {m['method']} | {options or '-'} | {m.get('num_parameters', 0):,} | "
                         f"{m.get('petl_parameters', 0):,} |")
        lines += ["", "PETL parameters count as the papers do: the added ones plus the unfrozen backbone "
                  "parameters, the classification head excluded.", ""]
    if card.parameters:
        p = card.parameters
        share = f" ({100 * p['trainable'] / p['total']:.4f}%)" if p.get("total") else ""
        lines += ["## Parameters", "", f"trainable {p['trainable']:,} of {p['total']:,}{share}.", ""]
    if card.metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        for name, value in card.metrics.items():
            lines.append(f"| {name} | {_metric(value)} |")
        lines.append("")
    if card.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in card.notes), ""]
    snippet = LOADING[card.kind].format(path=path, arch=card.architecture or "AutoModel",
                                        base=card.base or "see adapter_config.json")
    lines += ["## Loading", "", "```python", snippet, "```", ""]
    return "\n".join(lines)


def _value(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _metric(value) -> str:
    if isinstance(value, dict) and "mean" in value:
        std = f" +- {value['std']:.4f}" if value.get("std") and value.get("n", 1) > 1 else ""
        return f"{value['mean']:.4f}{std} (n={value.get('n', 1)})"
    return f"{value:.4f}" if isinstance(value, float) else json.dumps(value)


BASE_CARD_NAME = "README.base.md"


def write_card(folder, card: Card, *, path: str | None = None) -> Path:
    """Write folder/README.md. A card already there that surgeon did not write (the base model's own,
    copied with its files) is kept as README.base.md. `path`: how the loading snippet names the
    directory (default: the folder as given)."""
    folder = Path(folder)
    target = folder / CARD_NAME
    if target.is_file() and not _is_surgeon_card(target.read_text(errors="replace")):
        os.replace(target, folder / BASE_CARD_NAME)
        card.notes.append(f"The source model's own card is kept beside this one as {BASE_CARD_NAME}.")
    if card.kind == "model" and not card.architecture:
        card.architecture = _architecture(folder)
    tmp = folder / f".{CARD_NAME}.tmp-{os.getpid()}"
    tmp.write_text(render(card, card.loading_path or path or str(folder)))
    os.replace(tmp, target)
    return target


def _is_surgeon_card(text: str) -> bool:
    head = text.split("\n---", 1)[0]
    return text.startswith("---") and "\n- surgeon\n" in head + "\n"


def _architecture(folder: Path) -> str | None:
    try:
        names = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return None
    return names[0] if names else None


def model_card(title: str, made_from: list[str], summary: str = "", **fields) -> Card:
    """The card of a plain model directory (strip, tiny, merge, merge-lora)."""
    return Card(title=title, kind="model", summary=summary, made_from=made_from, **fields)


def merge_card(doc: dict) -> Card:
    """`surgeon merge` (Multimodal Attention Merging, paper 003), from its plan's description."""
    src, tgt = doc.get("source") or {}, doc.get("target") or {}
    lams = doc.get("lam") or {}
    layers = ", ".join(f"{k}@{v:g}" for k, v in lams.items()) if isinstance(lams, dict) else str(lams)
    return model_card(
        f"{Path(str(tgt.get('path', 'model'))).name} with attention merged from {src.get('ref', 'a source')}",
        [f"target: {tgt.get('path')} ({tgt.get('family')})", f"source: {src.get('ref')}"
         + (f" (noise: {src['noise']})" if src.get("noise") else ""),
         f"merged {', '.join(doc.get('roles') or [])} in layers {layers}: W = lam * W_source + (1 - lam) * W_target"],
        summary="Multimodal Attention Merging (paper 003): a plain transformers model.", family=tgt.get("family"))


def multi_card(doc: dict) -> Card:
    """`surgeon merge config.toml` (several models of one family), from its plan's description."""
    models = doc.get("models") or []
    base = doc.get("base") or {}
    made = ([f"base: {base.get('ref')} ({base.get('family')})"] if base else [])
    made += [f"model: {m.get('ref')} (weight {_setting(m.get('weight'))}, density {_setting(m.get('density'))})" for m in models]
    params = ", ".join(f"{k} {_setting(v)}" for k, v in (doc.get("parameters") or {}).items() if v is not None)
    made.append(f"{doc.get('method')} on {', '.join(doc['roles']) if doc.get('roles') else 'every float tensor'}"
                + (f" ({params})" if params else ""))
    family = (base or (models[0] if models else {})).get("family")
    return model_card(f"{doc.get('method')} merge of {len(models)} models", made,
                      summary="A merge of models of one family (surgeon merge config.toml): a plain transformers model.",
                      family=family)


def _setting(v) -> str:
    """A number as %g; a per-layer or per-tensor setting as 'per layer'."""
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ("per layer or tensor" if isinstance(v, list) else str(v))


def fold_card(doc: dict) -> Card:
    """`surgeon merge-lora` (LoRA folded into the base), from its plan's description."""
    adapter = doc.get("adapter") or {}
    return model_card(
        f"{Path(str(doc.get('base', 'model'))).name} with LoRA folded in",
        [f"base: {doc.get('base')}", f"adapter: {adapter.get('path')} ({adapter.get('format')})",
         f"{len(doc.get('folded') or {})} LoRA pairs folded (W + s B A)"
         + (f", {len(doc['replaced'])} tensors replaced" if doc.get("replaced") else "")],
        summary="LoRA folded into the weights: a plain transformers model, no LoRA left.")


def surgery_card(record: dict, *, full: bool = False, parameters: dict | None = None, **extra) -> Card:
    """The card of a surgery directory (inject --out, a run's checkpoint, export --as surgery)."""
    base = record.get("base") or {}
    source = base.get("path") or base.get("ref")
    if base.get("build"):
        from_base = f"base model: {_built(base['build'])} (rebuilt from this record on loading)"
    else:
        from_base = f"base model: {source or 'not recorded'}"
    methods = record.get("methods") or []
    names = " + ".join(m["method"] for m in methods) or "no method"
    kind = "full-surgery" if full else "surgery"
    what = ("the whole model with the injected modules" if full else
            "the adapter only (the base is loaded from the record)")
    card = Card(title=f"{names} on {base.get('architecture') or base.get('family') or 'a model'}", kind=kind,
                summary=f"surgeon surgery: {what}.", architecture=base.get("architecture"), family=base.get("family"),
                methods=methods, parameters=parameters,
                made_from=[from_base + (f", fingerprint {base['fingerprint']}" if base.get("fingerprint") else "")])
    for key, value in extra.items():
        if key == "made_from":
            card.made_from += value
        else:
            setattr(card, key, value)
    return card


def _built(record: dict) -> str:
    from surgeon.built import describe

    return describe(record)
