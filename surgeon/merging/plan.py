"""The MAM merge plan for files, built from safetensors headers alone (no tensor data is read).

The role-level pairs (surgeon.merging.pairs, shared with the in-memory and learnable paths) become
ops of the seam (surgeon.merging.seam): each merged q/k/v tensor of the target reads the target's
tensor and the source's (or the noise statistics') and combines them; every other target tensor is
copied. All shape checks happen here, so a mismatch is reported before anything is read in full.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint
from surgeon.merging import noise as noise_mod
from surgeon.merging.layers import layer_list, parse_lams, parse_layer_map, read_layers_file
from surgeon.merging.pairs import ROLES as MERGED_ROLES
from surgeon.merging.pairs import CheckpointSide, Pair, check_attention, mam_pairs
from surgeon.merging.seam import OUTPUT_DTYPES, Input, Plan, make_ops, output_dtype  # noqa: F401 (re-export)

NOISE_KINDS = noise_mod.KINDS


@dataclass
class Source:
    """What is interpolated into the target: a checkpoint, or noise (paper 003, Table 1 baselines).

    For noise, `ckpt` is the model whose parameters give the noise its mean and variance (the
    --noise-from model for noise:source, the target for noise:target, none for N(0, 1))."""

    ref: str
    ckpt: Optional[Checkpoint]
    noise: Optional[str] = None  # None | "source" | "target" | "normal"
    stats: str = "model"  # noise statistics: "model" (pooled, the paper's reading) | "tensor"


@dataclass
class MergePlan(Plan):
    source: Source = None
    target: Checkpoint = None
    pairs: list[Pair] = field(default_factory=list)
    lams: dict[int, float] = field(default_factory=dict)  # target layer -> lambda
    layer_map: dict[int, int] = field(default_factory=dict)  # target layer -> source layer
    bias: bool = True
    seed: int = 0
    roles: tuple = MERGED_ROLES

    def describe(self) -> dict:
        src = self.source
        by_role: dict[str, dict[str, float]] = {}
        for p in self.pairs:
            by_role.setdefault(str(p.layer), {})[p.role] = p.lam
        uniform = all(len(set(v.values())) == 1 for v in by_role.values())
        doc = {
            "source": {"ref": src.ref, "noise": src.noise,
                       "path": str(src.ckpt.path) if src.ckpt else None,
                       "family": src.ckpt.family.name if src.ckpt else None},
            "target": {"path": str(self.target.path), "family": self.target.family.name,
                       "num_layers": self.target.dims["num_layers"], "hidden_size": self.target.dims["hidden_size"]},
            "layers": sorted(self.lams),
            "lam": {str(i): lam for i, lam in sorted(self.lams.items())},
            "layer_map": {str(t): s for t, s in self.layer_map.items()},
            "roles": list(self.roles),
            "bias": self.bias,
            "seed": self.seed if src.noise else None,
            "noise_stats": src.stats if src.noise in ("source", "target") else None,
            **self.summary(),
        }
        if not uniform:  # lam given per role (a merge config's conditions)
            doc["lam_by_role"] = by_role
        return doc


def _shape_text(ckpt: Checkpoint) -> str:
    d = ckpt.dims
    return f"{ckpt.family.name}, {d['num_layers']} layers x hidden {d['hidden_size']}"


def build_plan(
    target: Checkpoint,
    source: Source,
    lam: Union[str, float, Callable[[str, str], float]],
    layers: Optional[str] = None,
    layers_from: Optional[str] = None,
    layer_map: Optional[str] = None,
    bias: bool = True,
    dtype: Optional[str] = None,
    seed: int = 0,
    roles: tuple = MERGED_ROLES,
) -> MergePlan:
    """lam: --lam's text (one value, or one per layer), or a function (target key, role) -> lam
    (a merge config's per-layer or per-role setting)."""
    from dataclasses import replace

    from surgeon.merging import mam

    roles = tuple(roles)
    side = CheckpointSide(target)
    check_attention(side, roles)
    n_t, h_t = side.num_layers, side.hidden_size
    real = source.ckpt if source.noise is None else None  # a source whose tensors are merged in
    if real is not None and real is not target:
        check_attention(CheckpointSide(real), roles)
    n_s = real.dims["num_layers"] if real is not None else n_t
    h_s = real.dims["hidden_size"] if real is not None else h_t

    # which target layer takes which source layer
    if layer_map:
        if h_s != h_t:
            raise SurgeonError(
                f"--source {source.ref} ({_shape_text(real)}) and --target {target.path} ({_shape_text(target)}) "
                "have different hidden sizes; attention matrices cannot be interpolated"
            )
        mapping = parse_layer_map(layer_map, n_s, n_t)
    else:
        if (n_s, h_s) != (n_t, h_t):
            raise SurgeonError(
                f"--source {source.ref} ({_shape_text(real)}) and --target {target.path} ({_shape_text(target)}) "
                "differ; merging needs the same layer count and hidden size (or --layer-map SOURCE:TARGET,...)"
            )
        mapping = {i: i for i in range(n_t)}

    if layers is not None and layers_from:
        raise SurgeonError("--layers and --layers-from: give one of them")
    if layers is not None:  # --layers "" selects nothing: refused, not read as every layer
        chosen = layer_list(layers, n_t)
    elif layers_from:
        chosen = read_layers_file(layers_from, n_t)
    else:
        chosen = sorted(mapping)
    unmapped = [i for i in chosen if i not in mapping]
    if unmapped:
        raise SurgeonError(f"--layers: target layer {unmapped[0]} has no source layer in --layer-map")
    lam_at = lam if callable(lam) else None
    lams = parse_lams(lam, chosen, n_t) if lam_at is None else {i: lam_at(side.key(i, roles[0], "weight"), roles[0]) for i in chosen}
    out_dtype = output_dtype(dtype)

    def per_tensor(pairs):
        if lam_at is None:
            return pairs
        return [replace(p, lam=lam_at(side.key(p.layer, p.role, p.leaf), p.role)) for p in pairs]

    if real is not None:
        pairs, notes = mam_pairs(side, real, mapping, lams, bias=bias, roles=roles)
        pairs = per_tensor(pairs)
        checkpoints = [target, real]
        merged = {side.key(p.layer, p.role, p.leaf): ([Input(0, side.key(p.layer, p.role, p.leaf)), Input(1, p.source_key)],
                                                       mam.lerp, {"layer": p.layer, "role": p.role, "lam": p.lam})
                  for p in pairs}
    else:
        normal = source.noise == "normal"
        pairs, notes = mam_pairs(side, None, mapping, lams, bias=bias, noise_bias=not normal, roles=roles)
        pairs = per_tensor(pairs)
        if normal and bias:
            notes.append("N(0, 1) replaces weights only: the biases stay the target's")
        checkpoints = [target] if source.ckpt is None or source.ckpt is target else [target, source.ckpt]
        merged = mam.noise_ops(source, side, pairs, seed, stats_index=len(checkpoints) - 1)
    ops = make_ops(target, merged, out_dtype)
    return MergePlan("mam", checkpoints, ops, out_dtype, notes, source=source, target=target, pairs=pairs,
                     lams=lams, layer_map={i: mapping[i] for i in chosen}, bias=bias, seed=seed, roles=roles)


def open_source(ref: str, target: Checkpoint, noise_from: Optional[str] = None, allow_pickle: bool = False,
                noise_stats: str = "model") -> Source:
    """--source REF, or one of the noise baselines noise:source (statistics from --noise-from, a model
    of any shape), noise:target, noise:normal."""
    if noise_stats not in noise_mod.STATS:
        raise SurgeonError(f"--noise-stats: {noise_stats!r} is not one of {', '.join(noise_mod.STATS)}")
    if ref.startswith("noise:"):
        kind = ref.removeprefix("noise:")
        if kind not in NOISE_KINDS:
            raise SurgeonError(f"--source {ref}: unknown noise; use noise:source, noise:target or noise:normal")
        if kind == "source":
            if not noise_from:
                raise SurgeonError("--source noise:source needs --noise-from REF, the model whose statistics the noise copies")
            stats = Checkpoint.open(noise_from, allow_pickle=allow_pickle)
            check_attention(CheckpointSide(stats))
            return Source(ref, stats, kind, noise_stats)
        if noise_from:
            raise SurgeonError(f"--noise-from goes with --source noise:source, not {ref}")
        return Source(ref, target if kind == "target" else None, kind, noise_stats)
    if noise_from:
        raise SurgeonError("--noise-from goes with --source noise:source")
    return Source(ref, Checkpoint.open(ref, allow_pickle=allow_pickle))
