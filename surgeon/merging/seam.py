"""The merge seam: one plan, checked from headers before anything is written, and the runners.

A plan lists, for every output tensor, its inputs (keys in one or more checkpoints, read in float32)
and a combine function; a tensor without a combine function is copied from the base checkpoint bit
for bit. Every method (MAM, the noise baselines, LoRA folding, the multi-model merges) is a builder
of such a plan; the streaming runner here writes any of them, at a few tensors of memory.

A combine function gets the float32 arrays of its inputs, in order, and the op (its `meta`), and
returns a float32 array of the output shape. With `Plan.views` (the default) the inputs may be
read-only views of the memory-mapped input files (no read copy: measured faster than `readinto` on
page-cached files, see docs/merging.md): a combine function must then not write into them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint
from surgeon.io.writer import TensorSpec

OUTPUT_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
RECORD_FILE = "merge.json"
METADATA_KEY = "surgeon.merge"


@dataclass(frozen=True)
class Input:
    """One input tensor: `key` of the plan's checkpoint number `ckpt` (0 is the base)."""

    ckpt: int
    key: str


@dataclass(frozen=True)
class Op:
    spec: TensorSpec  # the output tensor
    key: str  # the base tensor it stands for (copied as is when combine is None)
    inputs: tuple[Input, ...] = ()
    combine: Optional[Callable] = None
    meta: dict = field(default_factory=dict, compare=False)  # layer, role, lam...: what describe() shows

    @property
    def merged(self) -> bool:
        return self.combine is not None


@dataclass
class Plan:
    method: str
    checkpoints: list[Checkpoint]  # [0] is the base: layout, sibling files, copied tensors
    ops: list[Op]
    dtype: Optional[str] = None  # output dtype override (safetensors name)
    notes: list[str] = field(default_factory=list)  # what the user should know (a bias kept, ...)
    extra_inputs: list[Path] = field(default_factory=list)  # further files never to be overwritten
    views: bool = True  # combine functions get read-only mapped views (False: private writable copies)
    shard_bytes: Optional[int] = None  # largest weights file written (--shard-size); None: 5 GiB

    @property
    def base(self) -> Checkpoint:
        return self.checkpoints[0]

    @property
    def specs(self) -> list[TensorSpec]:
        return [op.spec for op in self.ops]

    @property
    def merged(self) -> list[Op]:
        return [op for op in self.ops if op.merged]

    def peak_tensor_bytes(self) -> int:
        """Largest working set of one op: its inputs in float32, one more float32 array of the output
        shape for the arithmetic, and the cast output; a copied tensor goes file to file unbuffered."""
        peak = 0
        for op in self.ops:
            info = self.base.info(op.key)
            if op.merged:
                ins = sum(self.checkpoints[i.ckpt].info(i.key).numel * 4 for i in op.inputs)
                peak = max(peak, ins + math.prod(op.spec.shape) * 4 + op.spec.nbytes)
            elif op.spec.dtype != info.dtype:
                peak = max(peak, info.nbytes + info.numel * 4 + op.spec.nbytes)
        return peak

    def summary(self) -> dict:
        """The method-independent part of describe()."""
        merged = self.merged
        return {
            "method": self.method,
            "dtype": self.dtype,
            "notes": list(self.notes),
            "merged_tensors": [op.spec.name for op in merged],
            "num_merged": len(merged),
            "num_copied": len(self.ops) - len(merged),
            "output_bytes": sum(op.spec.nbytes for op in self.ops),
            "peak_tensor_bytes": self.peak_tensor_bytes(),
        }


def output_dtype(dtype: Optional[str]) -> Optional[str]:
    """--dtype / `dtype =` name -> safetensors dtype (None: as stored)."""
    if dtype is None:
        return None
    if dtype not in OUTPUT_DTYPES:
        raise SurgeonError(f"--dtype: {dtype!r} is not one of {', '.join(OUTPUT_DTYPES)}")
    return OUTPUT_DTYPES[dtype]


def check_float(ckpt: Checkpoint, key: str) -> None:
    info = ckpt.info(key)
    if not info.is_float or info.dtype.startswith("F8"):
        raise SurgeonError(f"{ckpt.path}: {key} is {info.dtype}, not a float tensor (quantised?)")


def make_ops(base: Checkpoint, merged: dict[str, tuple], dtype: Optional[str], skip=()) -> list[Op]:
    """Ops for every base tensor in order: merged[key] = (inputs, combine, meta), others copied."""
    ops, skip = [], set(skip)
    for name, info in base.tensors.items():
        if name in skip:
            continue
        out = dtype if (dtype and info.is_float) else info.dtype
        spec = TensorSpec(name, out, tuple(info.shape))
        if name in merged:
            check_float(base, name)
            inputs, combine, meta = merged[name]
            ops.append(Op(spec, name, tuple(inputs), combine, meta))
        else:
            ops.append(Op(spec, name))
    return ops


def emitter(plan: Plan):
    from surgeon.merging.stream import copy_tensor, put, raw_readable, read_float32, release_view, to_bytes

    ops = {op.spec.name: op for op in plan.ops}
    base = plan.base
    raw = raw_readable(base)

    def emit(writer, spec):
        op = ops[spec.name]
        if not op.merged:
            if spec.dtype == base.info(op.key).dtype:
                copy_tensor(writer, spec, base, op.key, raw)  # bit for bit
                return
            t = read_float32(base, op.key)
        else:
            arrays = [read_float32(plan.checkpoints[i.ckpt], i.key, view=plan.views) for i in op.inputs]
            t = op.combine(arrays, op)
        put(writer, spec, to_bytes(t, spec.dtype))
        if plan.views and op.merged:
            del arrays, t  # the views go before their pages are dropped
            for i in op.inputs:
                release_view(plan.checkpoints[i.ckpt], i.key)

    return emit


def run(plan: Plan, out: str | Path, *, record: dict, force: bool = False, drop_metadata=(), skip_files=()) -> Path:
    """Write the plan's model directory atomically, with `record` as merge.json and in the metadata."""
    from surgeon.io.atomic import atomic_output
    from surgeon.merging.output import write_model_dir

    inputs = list(dict.fromkeys([c.path for c in plan.checkpoints] + list(plan.extra_inputs)))
    with atomic_output(out, force=force, inputs=inputs) as tmp:
        write_model_dir(
            tmp, plan.base, plan.specs, emitter(plan), record=record, record_file=RECORD_FILE,
            metadata_key=METADATA_KEY, drop_metadata=drop_metadata, skip_files=skip_files, dtype=plan.dtype,
            max_shard_bytes=plan.shard_bytes,
        )
    return Path(out)


def provenance(method: str, doc: dict, drop=("merged_tensors", "peak_tensor_bytes")) -> dict:
    from surgeon import __version__

    body = {k: v for k, v in doc.items() if k not in drop and k != "method"}
    return {"format": "surgeon-merge/1", "method": method, "surgeon_version": __version__, **body}
