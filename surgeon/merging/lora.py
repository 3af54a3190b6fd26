"""Fold LoRA into base weights, streaming: W' = W + scaling * B @ A (in float32, cast once; numpy).

Adapter module paths are in-memory names (transformers 5); the anatomy maps them to the checkpoint's
keys by role (`q` of layer 3 is `...attention.q_proj` in memory and `...attention.attention.query`
on disk for AST), which also absorbs a task-model prefix present on one side only ('hubert.').
Everything is checked from headers before a tensor is read: every LoRA pair and full tensor must
land on a base tensor of the right shape, the base must not be quantised, and a surgeon adapter's
base fingerprint must match.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint
from surgeon.merging.adapter import RECORD_FILE as SURGERY_FILE
from surgeon.merging.adapter import Adapter, LoraPair
from surgeon.merging.seam import RECORD_FILE as MERGE_FILE  # noqa: F401 (re-export)
from surgeon.merging.seam import METADATA_KEY, Input, Plan, make_ops, output_dtype, provenance, run  # noqa: F401
from surgeon.surgery_keys import RECORD_KEY


@dataclass(frozen=True)
class Fold:
    pair: LoraPair
    transpose: bool  # delta is added as [in, out] (PEFT fan_in_fan_out on a weight stored that way)


@dataclass
class FoldPlan(Plan):
    adapter: Adapter = None
    folds: dict[str, Fold] = field(default_factory=dict)  # base key -> LoRA pair folded into it
    replace: dict[str, str] = field(default_factory=dict)  # base key -> adapter key of the tensor replacing it

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
    out_dtype = output_dtype(dtype)
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
    # the adapter's weights are checkpoint 1 (the base itself when the LoRA is embedded in it)
    merged = {k: ([Input(0, k), Input(1, f.pair.a_key), Input(1, f.pair.b_key)], fold,
                  {"scaling": f.pair.scaling, "transpose": f.transpose, "adapter": w.path}) for k, f in folds.items()}
    merged.update({k: ([Input(1, a)], take, {"adapter": w.path}) for k, a in replace.items()})
    ops = make_ops(base, merged, out_dtype, skip=skip)
    return FoldPlan("lora", [base, w], ops, out_dtype, extra_inputs=[adapter.path], adapter=adapter,
                    folds=folds, replace=replace)


def lora_delta(a: np.ndarray, b: np.ndarray, scaling: float, transpose: bool = False) -> np.ndarray:
    """scaling * B @ A in float32 ([out, in], or [in, out] when transposed)."""
    delta = np.matmul(b, a)
    delta *= np.float32(scaling)
    return delta.T if transpose else delta


def finite(array: np.ndarray, op, i: int) -> np.ndarray:
    """Input i of a fold, refused when it holds NaN or Inf (folded, it would spread to the model)."""
    if not np.isfinite(array).all():
        raise SurgeonError(f"{op.meta['adapter']}: adapter tensor {op.inputs[i].key} holds NaN or Inf; refusing to fold it")
    return array


def fold(arrays, op) -> np.ndarray:
    """Combine function: inputs (W, A, B) -> W + scaling * B @ A."""
    w, a, b = arrays
    delta = lora_delta(finite(a, op, 1), finite(b, op, 2), op.meta["scaling"], op.meta["transpose"])
    return np.add(w, delta, out=delta)  # the inputs may be read-only views


def take(arrays, op) -> np.ndarray:
    """Combine function: the adapter's full tensor replaces the base's."""
    return finite(arrays[0], op, 0)


def run_fold(plan: FoldPlan, out: str | Path, *, force: bool = False) -> Path:
    record = provenance("lora", plan.describe(), drop=("output_bytes",))
    return run(plan, out, record=record, force=force, drop_metadata=(RECORD_KEY,), skip_files=(SURGERY_FILE,))
