"""MAM as methods on the seam: W = lam_i * W_source + (1 - lam_i) * W_target on q, k, v (paper 003).

`lerp` is the combine function of every MAM path: the file runner (seam.run, streaming), the
in-memory runner (`merge_in_memory`, recipes) and, through the same pairs, Learnable-MAM. The noise
baselines are the same interpolation with a drawn matrix in place of the source's.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from surgeon.merging.noise import gaussian_like, model_stats, stats_layer
from surgeon.merging.seam import METADATA_KEY, RECORD_FILE, Input, provenance, run  # noqa: F401 (re-export)


def interpolate(source: np.ndarray, target: np.ndarray, lam: float) -> np.ndarray:
    """lam * source + (1 - lam) * target in float32, written as a lerp from the nearer end
    (target + lam (source - target) below 0.5, source - (1 - lam)(source - target) above, as
    torch.lerp does) so that lam = 0 gives the target and lam = 1 the source exactly; a multiply, then
    an add, never fused (Learnable-MAM's Interpolate computes the same steps)."""
    diff = source - target
    if lam < 0.5:
        diff *= np.float32(lam)
        return np.add(target, diff, out=diff)
    diff *= np.float32(1.0) - np.float32(lam)  # in float32, as Learnable-MAM's (1 - lam)
    return np.subtract(source, diff, out=diff)


def lerp(arrays, op) -> np.ndarray:
    """Combine function: inputs (target, source)."""
    target, source = arrays
    return interpolate(source, target, op.meta["lam"])


def noise_ops(source, side, pairs, seed: int, stats_index: int) -> dict:
    """Ops of a noise baseline: inputs (target[, statistics tensor]); the drawn matrix replaces the source."""
    target = side.ckpt
    stats = source.ckpt
    per_model = source.noise in ("source", "target") and source.stats == "model"
    n_s = stats.dims["num_layers"] if stats is not None else 0

    @lru_cache(maxsize=None)
    def pooled(role_leaf_keys: tuple) -> tuple[float, float]:  # computed once, when first needed
        return model_stats(stats, role_leaf_keys)

    def pooled_keys(leaf: str) -> tuple:
        return tuple(k for i in range(n_s) for r in ("q", "k", "v")
                     if (k := stats.role_key(i, r, leaf)) in stats)

    def combine(arrays, op):
        t = arrays[0]
        m = op.meta
        if source.noise == "normal":
            z = gaussian_like(t.shape, seed, op.key)
        elif per_model:
            mean, std = pooled(pooled_keys(m["leaf"]))
            z = gaussian_like(t.shape, seed, op.key, mean=mean, std=std)
        else:
            z = gaussian_like(t.shape, seed, op.key, arrays[1])
        return interpolate(z, t, m["lam"])

    merged = {}
    for p in pairs:
        key = side.key(p.layer, p.role, p.leaf)
        inputs = [Input(0, key)]
        if source.noise in ("source", "target") and not per_model:
            skey = stats.role_key(stats_layer(p.layer, side.num_layers, n_s), p.role, p.leaf)
            if skey not in stats:  # a statistics model without this bias: the target's bias stays
                continue
            inputs.append(Input(stats_index, skey))
        elif per_model and not pooled_keys(p.leaf):
            continue
        merged[key] = (inputs, combine, {"layer": p.layer, "role": p.role, "leaf": p.leaf, "lam": p.lam})
    return merged


def run_merge(plan, out: str | Path, *, force: bool = False) -> Path:
    return run(plan, out, record=provenance("mam", plan.describe()), force=force)


def merge_in_memory(model, source, *, layers="all", lam=0.1, bias: bool = True, option: str = "merge") -> list:
    """The in-memory runner of a MAM plan: the model's q/k/v parameters become `lerp` of themselves and
    the source checkpoint's tensors (float32, then the parameter's dtype). Returns the pairs."""
    import torch

    from surgeon.merging.seam import Op

    pairs, src, side = memory_pairs(model, source, layers=layers, lam=lam, bias=bias, option=option)
    from surgeon.merging.stream import read_float32

    with torch.no_grad():
        for p in pairs:
            own = side.param(p.layer, p.role, p.leaf)
            t = own.detach().to("cpu", torch.float32).numpy().copy()
            merged = lerp([t, read_float32(src, p.source_key)], Op(None, "", meta={"lam": p.lam}))
            own.copy_(torch.from_numpy(merged).to(own.dtype))
    return pairs


def memory_pairs(model, source, *, layers="all", lam=0.1, bias: bool = True, option: str = "merge"):
    """The pairs of a MAM merge into an in-memory model (recipes, Learnable-MAM): (pairs, source, side)."""
    from surgeon.errors import SurgeonError
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.merging.layers import lam_map, layer_list
    from surgeon.merging.pairs import ModuleSide, check_attention, mam_pairs

    side = ModuleSide(model)
    src = source if isinstance(source, Checkpoint) else Checkpoint.open(source)
    n = side.num_layers
    if src.dims["num_layers"] != n or src.dims["hidden_size"] != side.hidden_size:
        raise SurgeonError(f"{option}.source {source}: {src.dims['num_layers']} layers of width "
                           f"{src.dims['hidden_size']}, but the model has {n} layers of width {side.hidden_size}")
    check_attention(side)
    chosen = layer_list(layers, n, f"{option}.layers")
    lams = lam_map(lam, chosen, n, f"{option}.init_lam")
    pairs, _ = mam_pairs(side, src, {i: i for i in range(n)}, lams, bias=bias, option=f"{option}.source")
    return pairs, src, side
