"""Fold LoRA into base weights, streaming: W' = W + scaling * B @ A (in float32, cast once; numpy).

Adapter module paths are in-memory names (transformers 5); the anatomy maps them to the checkpoint's
keys by role (`q` of layer 3 is `...attention.q_proj` in memory and `...attention.attention.query`
on disk for AST), which also absorbs a task-model prefix present on one side only ('hubert.').
Everything is checked from headers before a tensor is read: every LoRA pair and full tensor must
land on a base tensor of the right shape, the base must not be quantised, and a surgeon adapter's
base fingerprint must match.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint
from surgeon.io.writer import TensorSpec
from surgeon.merging.adapter import RECORD_FILE as SURGERY_FILE
from surgeon.merging.adapter import Adapter, LoraPair
from surgeon.merging.plan import OUTPUT_DTYPES
from surgeon.merging.stream import copy_tensor, put, raw_readable, read_float32, to_bytes
from surgeon.surgery_keys import RECORD_KEY

MERGE_FILE = "merge.json"
METADATA_KEY = "surgeon.merge"


@dataclass(frozen=True)
class Fold:
    pair: LoraPair
    transpose: bool  # delta is added as [in, out] (PEFT fan_in_fan_out on a weight stored that way)


@dataclass
class FoldPlan:
    base: Checkpoint
    adapter: Adapter
    specs: list[TensorSpec]
    folds: dict[str, Fold]  # base key -> LoRA pair folded into it
    replace: dict[str, str]  # base key -> adapter key of the tensor replacing it
    dtype: Optional[str]

    def describe(self) -> dict:
        return {
            "base": str(self.base.path),
            "adapter": {"path": str(self.adapter.path), "format": self.adapter.kind, "embedded": self.adapter.embedded},
            "folded": {k: {"rank": f.pair.rank, "scaling": f.pair.scaling} for k, f in self.folds.items()},
            "replaced": sorted(self.replace),
            "dtype": self.dtype,
            "output_bytes": sum(s.nbytes for s in self.specs),
        }


def base_key(base: Checkpoint, key: str, scheme: str) -> Optional[str]:
    """The checkpoint key holding the tensor an adapter calls `key` (a parameter path), or None."""
    fam = base.family
    other = "disk" if scheme == "memory" else "memory"
    candidates = []
    for sch in (scheme, other):
        parsed = fam.parse(key, sch)
        if parsed:
            _, layer, role, leaf = parsed
            candidates.append(base.role_key(layer, role, leaf))
        try:
            candidates.append(fam.translate(key, sch, base.scheme))
        except SurgeonError:
            pass
    candidates.append(key)
    bp = fam.base_prefix + "."
    for c in list(candidates):  # a task-model prefix on one side only
        candidates.append(c[len(bp):] if c.startswith(bp) else bp + c)
    return next((c for c in candidates if c in base), None)


def check_base(base: Checkpoint) -> None:
    quant = (base.config or {}).get("quantization_config")
    if quant:
        method = quant.get("quant_method", "unknown") if isinstance(quant, dict) else "unknown"
        raise SurgeonError(f"{base.path}: quantised base ({method}); fold LoRA into the unquantised weights")


def check_fingerprint(base: Checkpoint, adapter: Adapter) -> None:
    if adapter.embedded or not adapter.base_fingerprint:
        return
    from surgeon.fingerprint import checkpoint_fingerprint

    have = checkpoint_fingerprint(base)
    if have != adapter.base_fingerprint:
        raise SurgeonError(
            f"{adapter.path}: adapter was made for base {adapter.base_ref or '?'} ({adapter.base_fingerprint}), "
            f"but {base.path} is a different model ({have})"
        )


def build_fold(base: Checkpoint, adapter: Adapter, dtype: Optional[str] = None) -> FoldPlan:
    check_base(base)
    if dtype is not None and dtype not in OUTPUT_DTYPES:
        raise SurgeonError(f"--dtype: {dtype!r} is not one of {', '.join(OUTPUT_DTYPES)}")
    out_dtype = OUTPUT_DTYPES.get(dtype) if dtype else None
    w = adapter.weights
    folds: dict[str, Fold] = {}
    for pair in adapter.pairs:
        key = base_key(base, pair.module + ".weight", adapter.scheme)
        if key is None:
            raise SurgeonError(f"{adapter.path}: LoRA on {pair.module}, which {base.path} does not have; the adapter was made for another model")
        info = base.info(key)
        if not info.is_float or info.dtype.startswith("F8"):
            raise SurgeonError(f"{base.path}: {key} is {info.dtype}, a quantised weight; fold LoRA into the unquantised weights")
        a, b = w.info(pair.a_key).shape, w.info(pair.b_key).shape
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise SurgeonError(f"{adapter.path}: {pair.module}: lora_A {list(a)} and lora_B {list(b)} do not chain")
        delta = (b[0], a[1])
        if tuple(info.shape) == delta:
            transpose = False  # a Linear weight [out, in]; PEFT too ignores fan_in_fan_out there
        elif pair.fan_in_fan_out and tuple(info.shape) == delta[::-1]:
            transpose = True
        else:
            raise SurgeonError(
                f"{adapter.path}: LoRA on {pair.module} gives a {list(delta)} update but {key} is {list(info.shape)}; "
                "the adapter was made for another model"
            )
        if key in folds:
            raise SurgeonError(f"{adapter.path}: two LoRA pairs land on {key}")
        folds[key] = Fold(pair, transpose)
    replace: dict[str, str] = {}
    for name, akey in adapter.full.items():
        key = base_key(base, name, adapter.scheme)
        if key is None:
            raise SurgeonError(f"{adapter.path}: tensor {name} has no counterpart in {base.path}; the adapter was made for another model")
        if w.info(akey).shape != base.info(key).shape:
            raise SurgeonError(f"{adapter.path}: {name} is {list(w.info(akey).shape)} but {key} in {base.path} is {list(base.info(key).shape)}")
        if key in folds:
            raise SurgeonError(f"{adapter.path}: {name} is both LoRA-adapted and replaced in full")
        replace[key] = akey
    check_fingerprint(base, adapter)
    skip = adapter.lora_keys() if adapter.embedded else set()
    specs = [
        TensorSpec(k, out_dtype if (out_dtype and info.is_float) else info.dtype, tuple(info.shape))
        for k, info in base.tensors.items() if k not in skip
    ]
    return FoldPlan(base, adapter, specs, folds, replace, out_dtype)


def lora_delta(a: np.ndarray, b: np.ndarray, scaling: float, transpose: bool = False) -> np.ndarray:
    """scaling * B @ A in float32 ([out, in], or [in, out] when transposed)."""
    delta = np.matmul(b, a)
    delta *= np.float32(scaling)
    return delta.T if transpose else delta


def finite(weights, key: str) -> np.ndarray:
    """An adapter tensor as float32, refused when it holds NaN or Inf (folded, it would spread to the model)."""
    t = read_float32(weights, key)
    if not np.isfinite(t).all():
        raise SurgeonError(f"{weights.path}: adapter tensor {key} holds NaN or Inf; refusing to fold it")
    return t


def emitter(plan: FoldPlan):
    w = plan.adapter.weights
    raw = raw_readable(plan.base)

    def emit(writer, spec):
        key = spec.name
        info = plan.base.info(key)
        fold = plan.folds.get(key)
        if key in plan.replace:
            t = finite(w, plan.replace[key])
        elif fold:
            p = fold.pair
            t = read_float32(plan.base, key)
            t += lora_delta(finite(w, p.a_key), finite(w, p.b_key), p.scaling, fold.transpose)
        elif spec.dtype == info.dtype:
            copy_tensor(writer, spec, plan.base, key, raw)  # bit for bit
            return
        else:
            t = read_float32(plan.base, key)
        put(writer, spec, to_bytes(t, spec.dtype))

    return emit


def provenance(plan: FoldPlan) -> dict:
    from surgeon import __version__

    doc = plan.describe()
    doc.pop("output_bytes")
    return {"format": "surgeon-merge/1", "method": "lora", "surgeon_version": __version__, **doc}


def run_fold(plan: FoldPlan, out: str | Path, *, force: bool = False) -> Path:
    from surgeon.io.atomic import atomic_output
    from surgeon.merging.output import write_model_dir

    with atomic_output(out, force=force, inputs=[plan.base.path, plan.adapter.path]) as tmp:
        write_model_dir(
            tmp, plan.base, plan.specs, emitter(plan), record=provenance(plan), record_file=MERGE_FILE,
            metadata_key=METADATA_KEY, drop_metadata=(RECORD_KEY,), skip_files=(SURGERY_FILE,), dtype=plan.dtype,
        )
    return Path(out)
