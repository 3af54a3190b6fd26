"""The output of a merge into an authors' BEATs .pt target (`surgeon merge --target BEATs.pt`).

"pt" (the default for such a target): the authors' layout again, {cfg, model[, label_dict]} with the
target's cfg, its keys in their order, label_dict kept and the shared table one tensor (a bare state dict
target gives a bare state dict); their `BEATs(BEATsConfig(cfg)).load_state_dict(ckpt["model"])` loads it.
"safetensors": a BEATs model directory (surgeon/beats/directory.py), the table stored once.
Both take the tensors from the merge seam's emitter (surgeon.merging.seam), so what is merged and what is
copied bit for bit is the same as for every other target.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from surgeon.errors import SurgeonError

FORMATS = ("pt", "safetensors")


def output_format(target, fmt: str | None) -> str:
    """The output format of a merge into `target` (a Checkpoint): pt only for an authors' .pt."""
    from surgeon.errors import did_you_mean

    authors = target.extras is not None
    if fmt is None:
        return "pt" if authors else "safetensors"
    if fmt not in FORMATS:
        raise SurgeonError(f"--format: {fmt!r} is not an output format; known: {', '.join(FORMATS)}"
                           f"{did_you_mean(fmt, FORMATS)}")
    if fmt == "pt" and not authors:
        raise SurgeonError(f"--format pt: {target.path} is not an authors' BEATs .pt; its merges are model "
                           "directories (--format safetensors)")
    return fmt


class _Collect:
    """The writer interface the merge emitter writes through, keeping torch tensors in a dict."""

    def __init__(self):
        self.state: dict = {}

    def write(self, name, tensor):
        self.state[name] = tensor

    def write_bytes(self, name, dtype, shape, data):
        import torch

        from surgeon.io.writer import torch_dtype

        self.state[name] = torch.frombuffer(bytearray(data), dtype=torch_dtype(dtype)).reshape(shape)


def _tied(state: dict, repeats: set) -> dict:
    """Every repeat of a tied key holds the first one's tensor (a dtype cast made one copy per key)."""
    from surgeon.beats.checkpoint import TABLE

    first = next((k for k in state if TABLE.match(k) and k not in repeats), None)
    return {k: (state[first] if k in repeats and first is not None else v) for k, v in state.items()}


def _inputs(plan) -> list:
    """Every file the merge reads: never overwritten by its output."""
    return list(dict.fromkeys([c.path for c in plan.checkpoints] + list(plan.extra_inputs)))


def write_pt(plan, out, *, force: bool = False) -> Path:
    import torch

    from surgeon.beats.checkpoint import CFG, LABELS, MODEL
    from surgeon.io.atomic import atomic_output
    from surgeon.merging.seam import emitter

    target = plan.base
    collect, emit = _Collect(), emitter(plan)
    for spec in plan.specs:
        emit(collect, spec)
    state = _tied(collect.state, target.tied_repeats)
    extras = target.extras
    doc = state if extras.get("bare") else {CFG: extras[CFG], MODEL: state,
                                            **({LABELS: extras[LABELS]} if LABELS in extras else {})}
    with atomic_output(out, force=force, inputs=_inputs(plan), directory=False) as tmp:
        torch.save(doc, tmp)
    return Path(out)


def write_dir(plan, out, *, force: bool = False) -> Path:
    from surgeon.beats.directory import CONFIG_NAME, directory_config
    from surgeon.io.atomic import atomic_output
    from surgeon.merging.output import write_model_dir
    from surgeon.merging.seam import METADATA_KEY, RECORD_FILE, emitter, provenance

    repeats = plan.base.tied_repeats
    record = provenance(plan.method, plan.describe())
    plan = dataclasses.replace(plan, ops=[op for op in plan.ops if op.key not in repeats])
    extras = plan.base.extras
    with atomic_output(out, force=force, inputs=_inputs(plan)) as tmp:
        write_model_dir(tmp, plan.base, plan.specs, emitter(plan), record=record,
                        record_file=RECORD_FILE, metadata_key=METADATA_KEY, dtype=plan.dtype,
                        max_shard_bytes=plan.shard_bytes)
        doc = directory_config(extras["cfg"], extras.get("label_dict"))
        (tmp / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    return Path(out)


def run_beats_merge(plan, out, fmt: str, *, force: bool = False) -> Path:
    return (write_pt if fmt == "pt" else write_dir)(plan, out, force=force)
