"""Run a MAM plan: W = lam_i * W_source + (1 - lam_i) * W_target on q, k, v, every other tensor copied.

Streaming: `emit` handles one output tensor at a time. An untouched tensor is copied byte for byte
from the target file; a merged one is read (target and source), combined in float32 and cast once to
the output dtype, then written before the next is read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from surgeon.io.atomic import atomic_output
from surgeon.merging.noise import gaussian_like
from surgeon.merging.output import write_model_dir
from surgeon.merging.plan import MergePlan, Step
from surgeon.merging.stream import copy_tensor, put, raw_readable, read_float32, to_bytes

RECORD_FILE = "merge.json"
METADATA_KEY = "surgeon.merge"


def interpolate(source: np.ndarray, target: np.ndarray, lam: float) -> np.ndarray:
    """lam * source + (1 - lam) * target in float32, written as a lerp from the nearer end
    (target + lam (source - target) below 0.5, source - (1 - lam)(source - target) above, as
    torch.lerp does) so that lam = 0 gives the target and lam = 1 the source exactly."""
    diff = source - target
    if lam < 0.5:
        diff *= np.float32(lam)
        return np.add(target, diff, out=diff)
    diff *= np.float32(1.0 - lam)
    return np.subtract(source, diff, out=diff)


def source_array(plan: MergePlan, step: Step, target: np.ndarray) -> np.ndarray:
    src = plan.source
    if src.noise is None:
        return read_float32(src.ckpt, step.source_key)
    # the noise copies the statistics of the source matrix (noise:source), the target's (noise:target) or N(0, 1)
    reference = read_float32(src.ckpt, step.source_key) if src.noise == "source" else (
        target if src.noise == "target" else None)
    return gaussian_like(target.shape, plan.seed, step.target_key, reference)


def emitter(plan: MergePlan):
    steps = {s.spec.name: s for s in plan.steps}
    raw = raw_readable(plan.target)

    def emit(writer, spec):
        step = steps[spec.name]
        info = plan.target.info(step.target_key)
        if not step.merged and spec.dtype == info.dtype:
            copy_tensor(writer, spec, plan.target, step.target_key, raw)  # bit for bit
            return
        t = read_float32(plan.target, step.target_key)
        if step.merged:
            t = interpolate(source_array(plan, step, t), t, step.lam)
        put(writer, spec, to_bytes(t, spec.dtype))

    return emit


def provenance(plan: MergePlan) -> dict:
    from surgeon import __version__

    doc = plan.describe()
    doc.pop("merged_tensors")
    doc.pop("peak_tensor_bytes")
    return {"format": "surgeon-merge/1", "method": "mam", "surgeon_version": __version__, **doc}


def run_merge(plan: MergePlan, out: str | Path, *, force: bool = False) -> Path:
    inputs = [plan.target.path] + ([plan.source.ckpt.path] if plan.source.ckpt is not None else [])
    with atomic_output(out, force=force, inputs=inputs) as tmp:
        write_model_dir(
            tmp, plan.target, plan.specs, emitter(plan),
            record=provenance(plan), record_file=RECORD_FILE, metadata_key=METADATA_KEY, dtype=plan.dtype,
        )
    return Path(out)
