"""`surgeon export RUN_OR_CHECKPOINT --out DIR --as model|surgery|peft`: a trained run (or any surgery
directory) as something another tool loads.

    model    a save_pretrained directory (transformers' from_pretrained loads it) with the method in
             the weights: LoRA folded (W + s B A), what BitFit / full fine-tuning / the linear probe
             trained written back, the trained head included. Methods that add modules (adapters,
             prompts, prefixes, MoA) have no plain-model form: they are refused, pointing to --as surgery.
    surgery  the adapter-only directory `surgeon inject --out` writes (surgeon.load reads it).
    peft     LoRA as a PEFT adapter directory (PeftModel.from_pretrained reads it).

Every output carries a README.md card (with the run's metrics when it came from a run) and, for
--as model, export.json, the machine-readable record. Outputs are written atomically.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from surgeon.errors import SurgeonError, did_you_mean

FORMATS = ("model", "surgery", "peft")
FORMAT = "surgeon-export/1"
FOLDED = ("lora",)  # methods whose added modules fold into the weights
# what a pipeline needs beside the weights: copied from the base model (or a --full directory) as they are
PROCESSOR_FILES = ("preprocessor_config.json", "feature_extractor_config.json", "tokenizer_config.json",
                   "tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json",
                   "normalizer.json", "processor_config.json")


@dataclass
class Source:
    checkpoint: Path  # the surgery directory exported
    run: Path | None = None  # the run it belongs to
    cell: dict | None = None  # that cell's entry of results.json

    def metrics(self) -> dict | None:
        if not self.cell:
            return None
        return {**{f"test_{k}": v for k, v in self.cell.get("test", {}).items()},
                **{f"valid_{k}": v for k, v in self.cell.get("valid", {}).items()}}

    def made_from(self) -> list[str]:
        if self.run is None:
            return [f"surgery directory {self.checkpoint}"]
        line = f"run {self.run}, cell {self.checkpoint.name}"
        if self.cell:
            line += f" (selected epoch {self.cell.get('best_epoch')} on validation)"
        return [line]


def find_source(ref, cell: str | None = None) -> Source:
    """A run directory (its only cell, or `cell`), a run's checkpoint, or a surgery directory."""
    path = Path(ref)
    if (path / "results.json").is_file() and (path / "checkpoints").is_dir():
        cells = sorted(p.name for p in (path / "checkpoints").iterdir() if p.is_dir())
        if cell is None:
            if len(cells) != 1:
                raise SurgeonError(f"--cell: {path} holds {len(cells)} cells ({', '.join(cells) or 'none'}); "
                                   "name the one to export")
            cell = cells[0]
        if cell not in cells:
            raise SurgeonError(f"--cell: {path} has no cell {cell!r}{did_you_mean(cell, cells)} "
                               f"(its cells: {', '.join(cells)})")
        return _with_run(path / "checkpoints" / cell, path)
    if cell is not None:
        raise SurgeonError(f"--cell: {path} is not a run directory (no results.json and checkpoints/)")
    if not path.is_dir():
        raise SurgeonError(f"{path}: no such run or surgery directory")
    from surgeon.api import RECORD_NAME

    if not (path / RECORD_NAME).is_file():
        raise SurgeonError(f"{path}: neither a run directory (results.json, checkpoints/) nor a surgery directory "
                           f"({RECORD_NAME})")
    run = path.parent.parent
    if path.parent.name == "checkpoints" and (run / "results.json").is_file():
        return _with_run(path, run)
    return Source(path)


def _with_run(checkpoint: Path, run: Path) -> Source:
    doc = json.loads((run / "results.json").read_text())
    entry = next((c for c in doc.get("cells", []) if c.get("name") == checkpoint.name), None)
    return Source(checkpoint, run, entry)


def export(ref, out, *, as_: str = "model", cell: str | None = None, force: bool = False,
           shard_size: int | None = None, dtype: str | None = None) -> dict:
    """Write the export; returns what was done (the CLI prints it). shard_size and dtype: of the
    written model (--as model)."""
    from surgeon.io.atomic import check_output

    if as_ not in FORMATS:
        raise SurgeonError(f"--as: {as_!r} is not one of {', '.join(FORMATS)}{did_you_mean(as_, FORMATS)}")
    source = find_source(ref, cell)
    check_output(out, force=force, inputs=[source.checkpoint])  # before anything loads
    doc = {"out": str(out), "as": as_, "source": str(source.checkpoint),
           "run": str(source.run) if source.run else None, "cell": source.checkpoint.name if source.run else None,
           "metrics": source.metrics()}
    if as_ != "model" and (shard_size is not None or dtype is not None):
        raise SurgeonError(f"--shard-size and --dtype apply to --as model, which writes a model; --as {as_} "
                           "writes the trained tensors only")
    if as_ == "model":
        return {**doc, **_as_model(source, out, force, shard_size=shard_size, dtype=dtype)}
    return {**doc, **{"surgery": _as_surgery, "peft": _as_peft}[as_](source, out, force)}


def _methods_with_modules(model) -> list[str]:
    from surgeon.methods.surgery import method_parameter_names, state

    return [e["method"] for e in state(model)["methods"] if method_parameter_names(model, e["method"])]


def _as_model(source: Source, out, force: bool, shard_size: int | None = None, dtype: str | None = None) -> dict:
    from surgeon import cards
    from surgeon.api import load, parameter_counts, save_model_files, strip, surgery
    from surgeon.io.atomic import atomic_output

    model = load(source.checkpoint)
    record = surgery(model)
    added = [m for m in _methods_with_modules(model) if m not in FOLDED]
    if added:
        raise SurgeonError(f"{source.checkpoint}: {added[0]} adds modules to the model, which cannot be merged into "
                           "its weights; export it with --as surgery (surgeon.load reads it)")
    from surgeon.heads import head_of

    if head_of(model) == "mean":  # transformers' class would pool CLS/DIST (or project) instead: wrong logits
        raise SurgeonError(f"{source.checkpoint}: trained with the papers' mean head (model.head = \"mean\"), which "
                           "transformers' class does not compute; export it with --as surgery (surgeon.load reads it)")
    counts = parameter_counts(model)  # what the run trained
    folded = fold_lora(model)
    strip(model)
    export_record = {"format": FORMAT, "as": "model", "source": str(source.checkpoint), "surgery": record,
                     "folded": folded, "metrics": source.metrics()}
    methods = [e["method"] for e in record["methods"]]
    card = cards.Card(
        title=f"{type(model).__name__} with {' + '.join(methods)} merged in", kind="model",
        summary="A plain transformers model: the trained method is in its weights"
                + (" (LoRA folded: W + s B A)" if folded else "") + ", the trained head included.",
        architecture=type(model).__name__, family=record["base"].get("family"), methods=record["methods"],
        parameters=counts, metrics=source.metrics(),
        made_from=[*source.made_from(), *cards.surgery_card(record).made_from])
    with atomic_output(out, force=force, inputs=[source.checkpoint]) as tmp:
        save_model_files(model, tmp, shard_size, dtype)
        copied = copy_processor_files(_processor_sources(source, record), tmp)
        export_record["processor_files"] = copied
        (tmp / "export.json").write_text(json.dumps(export_record, indent=2) + "\n")
        cards.write_card(tmp, card, path=str(out))
    return {"methods": methods, "folded": folded, "processor_files": copied}


def _processor_sources(source: Source, record: dict) -> list[Path]:
    """Where the feature extractor / tokenizer files can be: the exported directory (a --full output),
    then the recorded base model (its path, then its reference)."""
    from surgeon.refs import resolve

    found = [source.checkpoint]
    base = record.get("base") or {}
    for ref in (base.get("path"), base.get("ref")):
        if ref:
            try:
                found.append(Path(resolve(ref)))
            except SurgeonError:
                continue
    return [p for p in found if p.is_dir()]


def copy_processor_files(folders: list[Path], out: Path) -> list[str]:
    """Copy each PROCESSOR_FILES file from the first folder that has it; returns the names copied."""
    copied = []
    for name in PROCESSOR_FILES:
        src = next((f / name for f in folders if (f / name).is_file()), None)
        if src is not None and not (out / name).exists():
            shutil.copyfile(src, out / name)
            copied.append(name)
    return copied


def fold_lora(model) -> list[str]:
    """W <- W + s B A for every surgeon LoRA module of the model (in float32, cast once, as `surgeon
    merge-lora` computes it); returns the adapted modules' paths. The LoRA modules stay until stripped."""
    import torch

    from surgeon.methods import get_method

    attr = get_method("lora").attr
    done = []
    with torch.no_grad():
        for path, module in model.named_modules():
            lora = getattr(module, attr, None)
            if lora is None or not isinstance(module, torch.nn.Linear):
                continue
            delta = _lora_delta(lora.lora_A.detach().float().cpu().numpy(), lora.lora_B.detach().float().cpu().numpy(),
                                lora.scaling)
            w = module.weight
            w.copy_((w.detach().float().cpu() + torch.from_numpy(delta)).to(w.dtype))
            done.append(path)
    return done


def _lora_delta(a, b, scaling: float):
    """scaling * B @ A: the folding code of `surgeon merge-lora` (surgeon.merging.lora)."""
    from surgeon.merging.lora import lora_delta

    return lora_delta(a, b, scaling)


def _as_surgery(source: Source, out, force: bool) -> dict:
    from surgeon import cards
    from surgeon.api import load, parameter_counts, save_surgery, surgery

    model = load(source.checkpoint)
    record = surgery(model)
    card = cards.surgery_card(record, parameters=parameter_counts(model), metrics=source.metrics(),
                              made_from=source.made_from())
    save_surgery(model, out, force=force, inputs=[source.checkpoint], card=card)
    return {"methods": [e["method"] for e in record["methods"]]}


def _as_peft(source: Source, out, force: bool) -> dict:
    from surgeon import cards
    from surgeon.api import read_record
    from surgeon.io.atomic import atomic_output
    from surgeon.merging.adapter import read_adapter
    from surgeon.merging.peft_format import write_peft

    record = read_record(source.checkpoint) or {"methods": [], "base": {}}
    methods = [e["method"] for e in record["methods"]]
    if "lora" not in methods:
        raise SurgeonError(f"{source.checkpoint}: {' + '.join(methods) or 'no method'}, not LoRA; PEFT adapters "
                           "hold LoRA only: export it with --as surgery")
    others = [m for m in methods if m != "lora"]
    if others:
        raise SurgeonError(f"{source.checkpoint}: LoRA with {others[0]}; a PEFT adapter holds LoRA only: export it "
                           "with --as surgery")
    base = record.get("base") or {}
    from surgeon.built import describe

    base_words = describe(base["build"]) if base.get("build") else (base.get("path") or base.get("ref"))
    card = cards.Card(title=f"LoRA on {base.get('architecture') or 'a model'} (PEFT adapter)", kind="peft",
                      summary="A PEFT LoRA adapter: load its base model, then this adapter over it.",
                      family=base.get("family"), methods=record["methods"], metrics=source.metrics(),
                      base=base_words, made_from=[*source.made_from(), *cards.surgery_card(record).made_from])
    import tempfile

    adapter = read_adapter(source.checkpoint)
    with tempfile.TemporaryDirectory() as scratch, atomic_output(out, force=force, inputs=[source.checkpoint]) as tmp:
        if base.get("build"):  # PEFT saves a partly trained module whole: the rest comes from the base, on disk
            adapter = _with_base_on_disk(adapter, base["build"], Path(scratch) / "base")
        inner = write_peft(adapter, tmp / "peft")
        for f in inner.iterdir():
            shutil.move(str(f), tmp / f.name)
        inner.rmdir()
        cards.write_card(tmp, card, path=str(out))
    return {"methods": methods}


def _with_base_on_disk(adapter, build: dict, folder: Path):
    """The adapter, its recorded base pointing to a copy of the built base written to `folder`."""
    from dataclasses import replace

    from surgeon.built import build as rebuild

    rebuild(build).save_pretrained(folder)
    config = dict(adapter.config)
    config["base"] = {**(config.get("base") or {}), "path": str(folder)}
    return replace(adapter, config=config)
