"""The MAM merge plan, built from safetensors headers alone (no tensor data is read).

Roles, not names: the target's q/k/v of layer i are found with `Checkpoint.role_key`, the source's of
its mapped layer likewise, so BERT or ViT keys line up with HuBERT, wav2vec 2.0 or AST keys, on disk
or in-memory names. Every other target tensor is planned as a copy. All shape checks happen here, so
a mismatch is reported before anything is read in full.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint
from surgeon.io.writer import TensorSpec
from surgeon.merging.layers import parse_lams, parse_layer_map, parse_layers, read_layers_file

MERGED_ROLES = ("q", "k", "v")  # paper 003 eqs. 1-3: query, key and value
NOISE_KINDS = ("source", "target", "normal")
OUTPUT_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


@dataclass
class Source:
    """What is interpolated into the target: a checkpoint, or noise (paper 003, Table 1 baselines).

    For noise, `ckpt` is the model whose matrices give the noise its mean and variance (the source
    for noise:source, the target for noise:target, none for N(0, 1))."""

    ref: str
    ckpt: Optional[Checkpoint]
    noise: Optional[str] = None  # None | "source" | "target" | "normal"


@dataclass(frozen=True)
class Step:
    """One output tensor: copied from the target, or merged (lam set)."""

    spec: TensorSpec
    target_key: str
    layer: Optional[int] = None
    role: Optional[str] = None
    source_key: Optional[str] = None  # key in Source.ckpt (source weights or noise statistics)
    lam: Optional[float] = None

    @property
    def merged(self) -> bool:
        return self.lam is not None


@dataclass
class MergePlan:
    source: Source
    target: Checkpoint
    steps: list[Step]
    lams: dict[int, float]  # target layer -> lambda
    layer_map: dict[int, int]  # target layer -> source layer
    bias: bool
    dtype: Optional[str]  # output dtype override (safetensors name) or None
    seed: int = 0

    @property
    def specs(self) -> list[TensorSpec]:
        return [s.spec for s in self.steps]

    def peak_tensor_bytes(self) -> int:
        """Largest working set of one step: a merged tensor holds the target and source in float32, their
        difference and the cast output; an unchanged tensor is copied file to file without a buffer."""
        peak = 0
        for s in self.steps:
            t = self.target.info(s.target_key)
            if s.merged:
                peak = max(peak, 3 * t.numel * 4 + s.spec.nbytes)
            elif s.spec.dtype != t.dtype:
                peak = max(peak, t.nbytes + t.numel * 4 + s.spec.nbytes)
        return peak

    def describe(self) -> dict:
        merged = [s for s in self.steps if s.merged]
        src = self.source
        return {
            "source": {"ref": src.ref, "noise": src.noise,
                       "path": str(src.ckpt.path) if src.ckpt else None,
                       "family": src.ckpt.family.name if src.ckpt else None},
            "target": {"path": str(self.target.path), "family": self.target.family.name,
                       "num_layers": self.target.dims["num_layers"], "hidden_size": self.target.dims["hidden_size"]},
            "layers": sorted(self.lams),
            "lam": {str(i): lam for i, lam in sorted(self.lams.items())},
            "layer_map": {str(t): s for t, s in self.layer_map.items()},
            "roles": list(MERGED_ROLES),
            "bias": self.bias,
            "dtype": self.dtype,
            "seed": self.seed if src.noise else None,
            "merged_tensors": [s.target_key for s in merged],
            "num_merged": len(merged),
            "num_copied": len(self.steps) - len(merged),
            "output_bytes": sum(s.spec.nbytes for s in self.steps),
            "peak_tensor_bytes": self.peak_tensor_bytes(),
        }


def _shape_text(ckpt: Checkpoint) -> str:
    d = ckpt.dims
    return f"{ckpt.family.name}, {d['num_layers']} layers x hidden {d['hidden_size']}"


def check_attention(target: Checkpoint) -> None:
    """The target must have q, k and v in the anatomy and in its keys."""
    roles = target.family.naming(target.scheme).roles
    missing = [r for r in MERGED_ROLES if r not in roles]
    if missing:
        raise SurgeonError(f"{target.path}: family {target.family.name} has no attention {missing[0]} in the anatomy; nothing to merge")
    if not target.dims["num_layers"]:
        raise SurgeonError(f"{target.path}: no transformer layers found; nothing to merge")
    for i in range(target.dims["num_layers"]):
        for role in MERGED_ROLES:
            key = target.role_key(i, role)
            if key not in target:
                raise SurgeonError(f"{target.path}: layer {i} has no attention {role} weight ({key}); nothing to merge")


def build_plan(
    target: Checkpoint,
    source: Source,
    lam: str,
    layers: Optional[str] = None,
    layers_from: Optional[str] = None,
    layer_map: Optional[str] = None,
    bias: bool = True,
    dtype: Optional[str] = None,
    seed: int = 0,
) -> MergePlan:
    check_attention(target)
    n_t, h_t = target.dims["num_layers"], target.dims["hidden_size"]
    stats = source.ckpt
    if stats is not None and stats is not target:
        check_attention(stats)
    n_s = stats.dims["num_layers"] if stats is not None else n_t
    h_s = stats.dims["hidden_size"] if stats is not None else h_t

    # which target layer takes which source layer
    if layer_map:
        if h_s != h_t:
            raise SurgeonError(
                f"--source {source.ref} ({_shape_text(stats)}) and --target {target.path} ({_shape_text(target)}) "
                "have different hidden sizes; attention matrices cannot be interpolated"
            )
        mapping = parse_layer_map(layer_map, n_s, n_t)
    else:
        if (n_s, h_s) != (n_t, h_t):
            raise SurgeonError(
                f"--source {source.ref} ({_shape_text(stats)}) and --target {target.path} ({_shape_text(target)}) "
                "differ; merging needs the same layer count and hidden size (or --layer-map SOURCE:TARGET,...)"
            )
        mapping = {i: i for i in range(n_t)}

    if layers is not None and layers_from:
        raise SurgeonError("--layers and --layers-from: give one of them")
    if layers is not None:  # --layers "" selects nothing: refused, not read as every layer
        chosen = parse_layers(layers, n_t)
    elif layers_from:
        chosen = read_layers_file(layers_from, n_t)
    else:
        chosen = sorted(mapping)
    unmapped = [i for i in chosen if i not in mapping]
    if unmapped:
        raise SurgeonError(f"--layers: target layer {unmapped[0]} has no source layer in --layer-map")
    lams = parse_lams(lam, chosen, n_t)

    if dtype is not None and dtype not in OUTPUT_DTYPES:
        raise SurgeonError(f"--dtype: {dtype!r} is not one of {', '.join(OUTPUT_DTYPES)}")
    out_dtype = OUTPUT_DTYPES.get(dtype) if dtype else None

    merged: dict[str, tuple] = {}  # target key -> (layer, role, source key, lam)
    for i in chosen:
        for role in MERGED_ROLES:
            for leaf in ("weight", "bias") if bias else ("weight",):
                tkey = target.role_key(i, role, leaf)
                if tkey not in target:
                    continue  # a target without attention biases: nothing to merge there
                skey = stats.role_key(mapping[i], role, leaf) if stats is not None else None
                if stats is not None:
                    if skey not in stats:
                        raise SurgeonError(
                            f"{stats.path}: no {role} {leaf} in layer {mapping[i]} ({skey})"
                            + ("; pass --no-bias to merge weights only" if leaf == "bias" else "")
                        )
                    s_info, t_info = stats.info(skey), target.info(tkey)
                    if s_info.shape != t_info.shape:
                        raise SurgeonError(
                            f"{skey} {list(s_info.shape)} (source layer {mapping[i]}) does not match "
                            f"{tkey} {list(t_info.shape)} (target layer {i})"
                        )
                    if not s_info.is_float:
                        raise SurgeonError(f"{stats.path}: {skey} is {s_info.dtype}, not a float tensor (quantised?)")
                merged[tkey] = (i, role, skey, lams[i])

    steps = []
    for name, info in target.tensors.items():
        if name in merged and not info.is_float:
            raise SurgeonError(f"{target.path}: {name} is {info.dtype}, not a float tensor (quantised?)")
        out = out_dtype if (out_dtype and info.is_float) else info.dtype
        spec = TensorSpec(name, out, tuple(info.shape))
        steps.append(Step(spec, name, *merged[name]) if name in merged else Step(spec, name))
    return MergePlan(source, target, steps, lams, {i: mapping[i] for i in chosen}, bias, out_dtype, seed)



def open_source(ref: str, target: Checkpoint, noise_from: Optional[str] = None, allow_pickle: bool = False) -> Source:
    """--source REF, or one of the noise baselines noise:source (statistics from --noise-from),
    noise:target, noise:normal."""
    if ref.startswith("noise:"):
        kind = ref.removeprefix("noise:")
        if kind not in NOISE_KINDS:
            raise SurgeonError(f"--source {ref}: unknown noise; use noise:source, noise:target or noise:normal")
        if kind == "source":
            if not noise_from:
                raise SurgeonError("--source noise:source needs --noise-from REF, the model whose statistics the noise copies")
            return Source(ref, Checkpoint.open(noise_from, allow_pickle=allow_pickle), kind)
        if noise_from:
            raise SurgeonError(f"--noise-from goes with --source noise:source, not {ref}")
        return Source(ref, target if kind == "target" else None, kind)
    if noise_from:
        raise SurgeonError("--noise-from goes with --source noise:source")
    return Source(ref, Checkpoint.open(ref, allow_pickle=allow_pickle))
