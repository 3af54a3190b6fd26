"""surgeon from Python: inject, strip, save and load parameter-efficient surgery.

    model = surgeon.load("ast")                       # a transformers model
    surgeon.inject(model, "lora", rank=8, targets=["q", "v"])
    surgeon.api.print_trainable_parameters(model)
    surgeon.api.save_surgery(model, "runs/lora")      # adapter only: adapter.safetensors + surgery.json
    model = surgeon.load("runs/lora")                 # base + surgery re-applied + adapter weights
    surgeon.strip(model)                              # back to the base model

Loading re-applies the recorded surgery to the freshly loaded base (transformers would re-initialise
unknown modules), then loads the saved weights over it, after checking the base's fingerprint.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from surgeon.errors import SurgeonError

ADAPTER_NAME = "adapter.safetensors"
RECORD_NAME = "surgery.json"
FORMAT = "surgeon-surgery/1"


# -- in memory -------------------------------------------------------------------------------------
def inject(model, method: str, **options):
    """Apply `method` with `options` (snake_case, see `surgeon inject --help`) in place; returns the model."""
    from surgeon.methods.surgery import apply_method

    apply_method(model, method, options)
    return model


def strip(model, method: str | None = None):
    """Remove every injected method (or one) in place; returns the model. Refuses a model without surgery."""
    from surgeon.methods.surgery import state, strip_methods
    from surgeon.methods.target import Target
    from surgeon.surgery_keys import method_of_key

    st = state(model)
    if not (st and st["methods"]) and not any(method_of_key(n) for n, _ in model.named_parameters()):
        raise SurgeonError("the model carries no surgery; nothing to strip")
    if st and _repatched_without_undo(Target(model), st):
        raise SurgeonError("loaa --repatch of a full save cannot be undone exactly; strip the adapter-only save "
                           "or start from the base model")
    strip_methods(model, method)
    return model


def _repatched_without_undo(target, st) -> bool:
    from surgeon.methods.repatch import is_repatched

    wanted = any(e["method"] == "loaa" and e["options"].get("repatch") for e in st["methods"])
    if not wanted or is_repatched(target) or target.family.token_grid is None:
        return False
    original = st.get("config") or {}
    return any(original.get(keys[2]) not in (None, getattr(target.config, keys[2]))
               for keys in target.family.token_grid if keys is not None)


def surgery(model) -> dict | None:
    """The surgery record of a model (what surgery.json holds), or None."""
    from surgeon import __version__
    from surgeon.methods.surgery import state

    st = state(model)
    if not st:
        return None
    return {
        "format": FORMAT,
        "surgeon_version": __version__,
        "base": _base_record(model, st["base"]),
        "methods": [{k: e[k] for k in ("method", "options", "num_parameters", "petl_parameters")}
                    for e in st["methods"]],
        "key_scheme": "memory",
        "config": st.get("config"),
    }


def _base_record(model, base: dict) -> dict:
    """The recorded base; a base built on the spot (no checkpoint to point to) says how it was built."""
    from surgeon.built import record_of

    base = dict(base)
    built = record_of(model)
    if built is not None and not base.get("path") and "build" not in base:
        base["build"] = built
    return base


def parameter_groups(model) -> dict:
    """{"method": [...], "backbone": [...], "head": [...]}: trainable parameters by group, for
    per-group learning rates (method modules, unfrozen backbone parameters, classification head)."""
    from surgeon.methods.surgery import parameter_groups as groups

    return groups(model)


# -- saving ----------------------------------------------------------------------------------------
def adapter_state_dict(model, base_path=None, build=None) -> dict:
    """What an adapter-only save holds: injected modules (parameters and buffers), every other
    trainable parameter (unfrozen LayerNorms, biases, the head), and every base tensor whose shape
    differs from the base checkpoint's (a position table resized for another input length), by
    in-memory names. `build`: the record of a base built on the spot (surgeon.built), compared instead."""
    from surgeon.surgery_keys import method_of_key

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    changed = (_reshaped_base_tensors(model, base_path) if base_path else
               _reshaped_built_tensors(model, build) if build else set())
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
            if method_of_key(k) or k in trainable or k in changed}


def _reshaped_base_tensors(model, base_path) -> set:
    """Names of the model's base-model tensors that the base checkpoint lacks or holds in another shape."""
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.methods.target import Target
    from surgeon.surgery_keys import method_of_key

    try:
        ckpt = Checkpoint.open(base_path)
        base_shapes = {ckpt.family.translate(k, ckpt.scheme, "memory").removeprefix(ckpt.prefix): tuple(t.shape)
                       for k, t in ckpt.tensors.items()}
    except SurgeonError:
        return set()
    prefix = Target(model).prefix
    return {k for k, v in model.state_dict().items()
            if k.startswith(prefix) and not method_of_key(k)
            and base_shapes.get(k.removeprefix(prefix)) != tuple(v.shape)}


def _reshaped_built_tensors(model, build: dict) -> set:
    """Names of the model's tensors that the base rebuilt from its record lacks or holds in another shape."""
    from surgeon.built import build as rebuild
    from surgeon.surgery_keys import method_of_key

    shapes = {k: tuple(v.shape) for k, v in rebuild(build).state_dict().items()}
    return {k for k, v in model.state_dict().items() if not method_of_key(k) and shapes.get(k) != tuple(v.shape)}


def save_model_files(model, directory, shard_size: int | None = None, dtype: str | None = None) -> None:
    """save_pretrained with surgeon's shard size (the same default as every surgeon writer) and an
    optional float dtype: what every command that writes a model calls."""
    from surgeon.io.writer import DEFAULT_MAX_SHARD_BYTES

    if dtype is not None:
        import torch

        model.to(getattr(torch, dtype))
    model.save_pretrained(directory, max_shard_size=shard_size or DEFAULT_MAX_SHARD_BYTES)


def save_surgery(model, out, full: bool = False, force: bool = False, inputs=(), card=None,
                 shard_size: int | None = None, dtype: str | None = None) -> Path:
    """Write the surgery: adapter only (default) or, with full, a complete transformers model directory;
    both with surgery.json, the record in the safetensors metadata and a README.md model card (`card`:
    a surgeon.cards.Card, default one made from the record). Atomic; refuses to overwrite without
    force, and refuses an output overlapping an input (the base model among them)."""
    from surgeon.cards import surgery_card, write_card
    from surgeon.io.atomic import atomic_output
    from surgeon.io.writer import save_state_dict
    from surgeon.surgery_keys import RECORD_KEY

    record = surgery(model)
    if record is None:
        raise SurgeonError("the model carries no surgery; inject a method first")
    if card is None:
        card = surgery_card(record, full=full, parameters=parameter_counts(model))
    metadata = {RECORD_KEY: json.dumps(record, separators=(",", ":"))}
    guarded = [*inputs, record["base"].get("path")]
    with atomic_output(out, force=force, inputs=[p for p in guarded if p]) as tmp:
        if full:
            save_model_files(model, tmp, shard_size, dtype)
            _add_metadata(tmp, metadata)
        else:
            base = record["base"]
            save_state_dict(tmp, adapter_state_dict(model, base.get("path"), base.get("build")), metadata,
                            filename=ADAPTER_NAME)
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
        write_card(tmp, card, path=str(out))
    return Path(out)


def parameter_counts(model) -> dict:
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters())}


def _add_metadata(directory: Path, metadata: dict) -> None:
    """Put the record into the metadata of the safetensors files save_pretrained wrote."""
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.io.writer import save_state_dict

    for file in sorted(directory.glob("*.safetensors")):
        ckpt = Checkpoint.open(file)
        tmp_name = f".{file.name}"
        save_state_dict(directory, ckpt.state_dict(), {**ckpt.metadata, **metadata}, filename=tmp_name)
        os.replace(directory / tmp_name, file)


# -- loading ---------------------------------------------------------------------------------------
def read_record(path: Path) -> dict | None:
    """The surgery record of a directory or checkpoint (surgery.json, else the weights' metadata)."""
    from surgeon.io.checkpoint import Checkpoint, read_json
    from surgeon.surgery_keys import check_record, parse_record

    if path.is_dir() and (path / RECORD_NAME).is_file():
        record = read_json(path / RECORD_NAME)
        check_record(record, str(path / RECORD_NAME))
    elif path.is_dir() and (path / ADAPTER_NAME).is_file():
        record = parse_record(Checkpoint.open(path / ADAPTER_NAME).metadata)
    else:
        record = parse_record(Checkpoint.open(path).metadata)
    if record is None:
        return None
    if record.get("format") != FORMAT or not isinstance(record.get("methods"), list) or "base" not in record:
        raise SurgeonError(f"{path}: not a surgeon surgery record (format {record.get('format')!r})")
    return record


def is_adapter_dir(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_NAME).is_file() and not (path / "config.json").is_file()


def base_reference(path: Path, record: dict, base=None) -> Path:
    """The base model directory an adapter refers to: `base` when given, else the recorded path or ref."""
    from surgeon.refs import resolve

    if base is not None:
        return resolve(base)
    info = record["base"]
    for ref in (info.get("path"), info.get("ref")):
        if ref:
            try:
                return resolve(ref)
            except SurgeonError:
                continue
    raise SurgeonError(f"{path}: its base model ({info.get('path') or info.get('ref') or 'not recorded'}) "
                       "cannot be found; pass the base model (--base)")


def check_fingerprint(path: Path, record: dict, found: str, base_path) -> None:
    wanted = record["base"].get("fingerprint")
    if wanted and wanted != found:
        recorded = record["base"].get("path") or record["base"].get("ref") or "not recorded"
        raise SurgeonError(f"{path}: made for a base model with fingerprint {wanted} (recorded base: {recorded}), "
                           f"but {base_path} has {found}; pass the base model it was made for")


def load(ref, *, base=None, allow_pickle: bool = False):
    """A transformers model from a model reference, with any recorded surgery applied.

    `ref` is a plain model (directory, Hub id in the cache, alias), an adapter-only directory (its base
    is loaded from the record, or from `base`, and must match the recorded fingerprint) or a full
    directory written with full=True. A BEATs .pt file (the authors' {cfg, model[, label_dict]}) gives a
    surgeon.beats.BEATsModel; being a pickle, it is refused unless allow_pickle."""
    from surgeon.fingerprint import model_fingerprint
    from surgeon.hf import load_pretrained
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.io.pickle_checkpoint import is_pickle_path
    from surgeon.methods.surgery import STATE, apply_method
    from surgeon.refs import resolve

    path = resolve(ref)
    if path.is_file() and is_pickle_path(path):  # the authors' BEATs files: no config.json, their own layout
        from surgeon.beats.checkpoint import load_pt

        return load_pt(path, allow_pickle=allow_pickle)
    from surgeon.heads import restore_head

    record = read_record(path)
    if record is None:
        model = load_pretrained(path)
        restore_head(model)
        return model
    if is_adapter_dir(path):
        if base is None and record["base"].get("build"):  # built on the spot: built again
            base_path = None
            model = _rebuild_base(record)
            check_fingerprint(path, record, model_fingerprint(model), "the rebuilt base")
        else:
            base_path = base_reference(path, record, base)
            model = _load_base(base_path, record, allow_pickle)
            check_fingerprint(path, record, model_fingerprint(model), base_path)
        tensors = Checkpoint.open(path / ADAPTER_NAME).state_dict()
        info = {**record["base"], "path": str(Path(base_path).resolve()) if base_path else None}
    else:
        model = load_pretrained(path)
        ckpt = Checkpoint.open(path)
        tensors = {_memory_name(ckpt, k): ckpt.get(k) for k in ckpt.keys() if _is_surgery_key(k)}
        info = dict(record["base"])
    restore_head(model)  # a recorded mean head (model.head = "mean"), before its tensors load
    model.__dict__[STATE] = {"base": info, "config": record.get("config"), "methods": []}
    for entry in record["methods"]:
        apply_method(model, entry["method"], recorded_options(entry))
    _load_tensors(model, tensors, path)
    return model.eval()


def recorded_options(entry: dict) -> dict:
    """A record's options, with the meaning of options added since it was written (a method's
    RECORDED_BEFORE: an old LoAA save has conv biases), so old saves load as they were trained."""
    from surgeon.methods import get_method

    options = dict(entry.get("options") or {})
    before = getattr(get_method(entry["method"]), "RECORDED_BEFORE", {})
    return {**{k: v for k, v in before.items() if k not in options}, **options}


def _is_surgery_key(key: str) -> bool:
    from surgeon.surgery_keys import method_of_key

    return method_of_key(key) is not None


def _memory_name(ckpt, key: str) -> str:
    return ckpt.family.translate(key, ckpt.scheme, "memory")


def _load_base(base_path: Path, record: dict, allow_pickle: bool = False):
    """The base model, with the config the surgery was made on (e.g. a new number of labels)."""
    import transformers

    from surgeon.hf import load_pretrained, quiet_transformers
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.io.pickle_checkpoint import is_pickle_path

    if Path(base_path).is_file() and is_pickle_path(Path(base_path)):  # an authors' BEATs .pt
        from surgeon.beats.checkpoint import load_pt

        return load_pt(base_path, allow_pickle=allow_pickle)

    arch = record["base"].get("architecture")
    cls = getattr(transformers, arch, None) if arch else None
    config = record.get("config")
    if not config or cls is None:
        return load_pretrained(base_path, model_class=cls)
    quiet_transformers()
    Checkpoint.open(base_path)  # validates headers and refuses pickles before transformers sees them
    config = dict(config)
    config_class = transformers.CONFIG_MAPPING[config["model_type"]]
    cfg = config_class.from_dict(config)
    model = cls.from_pretrained(base_path, config=cfg, use_safetensors=True, ignore_mismatched_sizes=True)
    return model.eval()


def _rebuild_base(record: dict):
    """A base built on the spot, built again from its record, with the config the surgery was made on
    (the tensors of another shape, e.g. a head for other classes, come from the adapter)."""
    import transformers

    from surgeon.built import BUILT, build

    base = build(record["base"]["build"])
    config = record.get("config")
    if not config:
        return base.eval()
    cfg = transformers.CONFIG_MAPPING[config["model_type"]].from_dict(dict(config))
    model = type(base)(cfg)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape},
                          strict=False)
    model.__dict__[BUILT] = base.__dict__[BUILT]
    return model.eval()


def _load_tensors(model, tensors: dict, source) -> None:
    own = model.state_dict()
    for name, t in tensors.items():
        if name not in own:
            raise SurgeonError(f"{source}: tensor {name!r} has no place in the model with its surgery re-applied")
        if tuple(own[name].shape) != tuple(t.shape):
            raise SurgeonError(f"{source}: tensor {name!r} has shape {list(t.shape)}, the model expects "
                               f"{list(own[name].shape)}")
    model.load_state_dict(tensors, strict=False)


# -- stripping on disk -----------------------------------------------------------------------------
def strip_to(ref, out, *, base=None, force: bool = False, shard_size: int | None = None,
             dtype: str | None = None, allow_pickle: bool = False) -> Path:
    """Write the model without its surgery. An adapter-only directory gives back the base it refers to
    (its files copied as they are, after checking the fingerprint, unless a shard size or dtype asks
    for them written anew); a full save is loaded, stripped and saved. A model with nothing to strip is
    refused. Each output carries a README.md card."""
    from surgeon.cards import model_card, write_card
    from surgeon.fingerprint import checkpoint_fingerprint, model_fingerprint
    from surgeon.io.atomic import atomic_output, check_output
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.io.writer import INDEX_NAME
    from surgeon.refs import resolve
    from surgeon.surgery_keys import find_surgery

    path = resolve(ref)
    record = read_record(path)
    if is_adapter_dir(path) and base is None and record and record["base"].get("build"):
        from surgeon.built import build, describe

        check_output(out, force=force, inputs=[path])
        model = build(record["base"]["build"])  # the base as it was built, before any head or surgery
        check_fingerprint(path, record, model_fingerprint(model), "the rebuilt base")
        with atomic_output(out, force=force, inputs=[path]) as tmp:
            save_model_files(model, tmp, shard_size, dtype)
            write_card(tmp, model_card(f"The base of {path.name}", [f"{path}, its surgery removed (the base "
                                       f"rebuilt from its record: {describe(record['base']['build'])})"]), path=str(out))
        return Path(out)
    if is_adapter_dir(path):
        base_path = base_reference(path, record or {"base": {}}, base)
        if not ((record or {}).get("base") or {}).get("fingerprint") and base is None:
            raise SurgeonError(f"{path}: the adapter records no fingerprint of its base model, so nothing shows that "
                               f"{base_path} is the model it was made for; name the base with --base to strip to it")
        ckpt = Checkpoint.open(base_path, allow_pickle=allow_pickle)
        check_fingerprint(path, record or {"base": {}}, checkpoint_fingerprint(ckpt), base_path)
        if ckpt.format == "pickle" and Path(base_path).is_file():  # an authors' BEATs .pt: that file again
            with atomic_output(out, force=force, inputs=[path, base_path], directory=False) as tmp:
                shutil.copy2(base_path, tmp)
            return Path(out)
        with atomic_output(out, force=force, inputs=[path, base_path]) as tmp:
            index = Path(base_path) / INDEX_NAME
            weights = {*ckpt.files, index}
            for f in [*ckpt.files, *([index] if index.is_file() else []), *ckpt.sibling_files()]:
                if f not in weights or (shard_size is None and dtype is None):
                    shutil.copy2(f, tmp / f.name)
            if shard_size is not None or dtype is not None:  # the weights written anew, as asked
                from surgeon.hf import load_pretrained

                save_model_files(load_pretrained(base_path), tmp, shard_size, dtype)
            write_card(tmp, model_card(f"The base of {path.name}", [f"{path}, its surgery removed: the base model "
                                       f"{base_path}, copied as it is"]), path=str(out))
        return Path(out)
    ckpt = Checkpoint.open(path)
    if record is None and not find_surgery({k: t.numel for k, t in ckpt.tensors.items()}, ckpt.metadata):
        raise SurgeonError(f"{path}: nothing to strip (no surgery recorded and no injected modules)")
    check_output(out, force=force, inputs=[path])  # before the model loads
    model = load(path)
    strip(model)
    with atomic_output(out, force=force, inputs=[path]) as tmp:
        save_model_files(model, tmp, shard_size, dtype)
        write_card(tmp, model_card(f"{path.name} without its surgery", [f"{path}, its surgery removed"]),
                   path=str(out))
    return Path(out)


# -- reporting -------------------------------------------------------------------------------------
def trainable_summary(model) -> dict:
    """Counts for the peft-style line and a per-module breakdown of the trainable parameters."""
    import re
    from collections import defaultdict

    from surgeon.methods.surgery import state
    from surgeon.methods.target import Target
    from surgeon.summary import layer_label
    from surgeon.surgery_keys import method_of_key

    target = Target(model)
    total = trainable = 0
    rows: dict = defaultdict(lambda: {"count": 0, "parameters": 0, "layers": set()})
    for name, p in model.named_parameters():
        total += p.numel()
        if not p.requires_grad:
            continue
        trainable += p.numel()
        group = method_of_key(name) or ("head" if target.is_head(name) else "backbone")
        module = name.rsplit(".", 1)[0]
        m = re.search(r"\.(\d+)\.", module)
        layer = int(m.group(1)) if m else None
        pattern = module[: m.start()] + ".{}." + module[m.end():] if m else module
        row = rows[(group, pattern)]
        row["parameters"] += p.numel()
        row["count"] += 1
        if layer is not None:
            row["layers"].add(layer)
    st = state(model) or {"methods": []}
    return {
        "trainable_parameters": trainable,
        "all_parameters": total,
        "trainable_percent": 100.0 * trainable / total if total else 0.0,
        "methods": [{"method": e["method"], "added_parameters": e["num_parameters"],
                     "petl_parameters": e["petl_parameters"]} for e in st["methods"]],
        # the layers written as `surgeon inspect` writes them: encoder.layer.{0..11}.attention...
        "modules": [{"group": g, "module": pat.replace("{}", layer_label(r["layers"])) if r["layers"] else pat,
                     "layers": len(r["layers"]) or 1, "parameters": r["parameters"]}
                    for (g, pat), r in sorted(rows.items(), key=lambda kv: (kv[0][0] in ("backbone", "head"),
                                                                             kv[0][0] == "head", kv[0][1]))],
    }


def print_trainable_parameters(model, console=None) -> None:
    """peft's one-liner, then a table of the trainable modules (layers collapsed)."""
    from rich.console import Console
    from rich.table import Table

    doc = trainable_summary(model)
    out = console or Console(highlight=False)
    if not out.is_terminal and console is None:  # piped: no width to fit, keep whole module names
        out = Console(highlight=False, width=200)
    out.print(f"trainable params: {doc['trainable_parameters']:,} || all params: {doc['all_parameters']:,} || "
              f"trainable%: {doc['trainable_percent']:.4f}")
    for m in doc["methods"]:
        out.print(f"{m['method']}: {m['added_parameters']:,} added, {m['petl_parameters']:,} by the papers' count "
                  "(added + unfrozen backbone, head excluded)")
    table = Table(box=None, header_style="bold")
    table.add_column("group")
    table.add_column("module", overflow="fold")  # folded, never cut: LoRA's q and v rows differ at the end
    table.add_column("layers")
    table.add_column("parameters", justify="right")
    for r in doc["modules"]:
        table.add_row(r["group"], r["module"], str(r["layers"]), f"{r['parameters']:,}")
    out.print(table)
