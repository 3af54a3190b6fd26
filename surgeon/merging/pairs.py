"""The MAM plan at the level of roles, shared by the file runner, the in-memory runner and Learnable-MAM.

A pair says: target layer i, role r (q, k or v), leaf (weight or bias) takes the source's tensor
`source_key` (or noise) with factor lam. The target is a *side*: a checkpoint (keys from the anatomy
by role) or an in-memory model (module paths by role); only shapes are looked at, so everything is
checked before a tensor is read or a parameter touched. A method asks for roles, never for names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint

ROLES = ("q", "k", "v")  # paper 003 eqs. 1-3: query, key and value


@dataclass(frozen=True)
class Pair:
    layer: int  # target layer
    role: str
    leaf: str  # "weight" | "bias"
    source_key: Optional[str]  # in the source (or noise statistics) checkpoint; None: no source tensor
    lam: float


class CheckpointSide:
    """A target checkpoint, addressed by role."""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt, self.name = ckpt, str(ckpt.path)
        self.num_layers, self.hidden_size = ckpt.dims["num_layers"], ckpt.dims["hidden_size"]
        self.family = ckpt.family
        self.roles = ckpt.family.naming(ckpt.scheme).roles

    def key(self, layer: int, role: str, leaf: str) -> str:
        return self.ckpt.role_key(layer, role, leaf)

    def shape(self, layer: int, role: str, leaf: str) -> Optional[tuple]:
        key = self.key(layer, role, leaf)
        return tuple(self.ckpt.info(key).shape) if key in self.ckpt else None


class ModuleSide:
    """An in-memory model (transformers), addressed by role through the anatomy's module paths."""

    def __init__(self, model):
        from surgeon.hf import family_of_model

        self.model, self.family = model, family_of_model(model)
        self.name = "the model"
        # by the family's config keys (BEATs' encoder_layers / encoder_embed_dim)
        dims = self.family.dims(model.config.to_dict())
        self.num_layers, self.hidden_size = int(dims["num_layers"]), int(dims["hidden_size"])
        self.roles = self.family.memory.roles

    def module(self, layer: int, role: str):
        from surgeon.hf import layer_module_path

        return self.model.get_submodule(layer_module_path(self.model, self.family, layer, role))

    def param(self, layer: int, role: str, leaf: str):
        return getattr(self.module(layer, role), leaf, None)

    def shape(self, layer: int, role: str, leaf: str) -> Optional[tuple]:
        p = self.param(layer, role, leaf)
        return tuple(p.shape) if p is not None else None


def check_attention(side, roles=ROLES) -> None:
    """The target must have the roles in its anatomy and their weights in every layer."""
    missing = [r for r in roles if r not in side.roles]
    if missing:
        raise SurgeonError(f"{side.name}: family {side.family.name} has no attention {missing[0]} in the anatomy; nothing to merge")
    if not side.num_layers:
        raise SurgeonError(f"{side.name}: no transformer layers found; nothing to merge")
    for i in range(side.num_layers):
        for role in roles:
            if side.shape(i, role, "weight") is None:
                where = f" ({side.key(i, role, 'weight')})" if hasattr(side, "key") else ""
                raise SurgeonError(f"{side.name}: layer {i} has no attention {role} weight{where}; nothing to merge")


def mam_pairs(
    target, source: Optional[Checkpoint], layer_map: dict[int, int], lams: dict[int, float], *,
    bias: bool = True, roles=ROLES, option: str = "--source", noise_bias: bool = True,
) -> tuple[list[Pair], list[str]]:
    """The pairs of a MAM merge (layers = the keys of lams, ascending) and the notes for the user.

    source None: noise that needs no source tensor (N(0, 1)); noise_bias False leaves the biases out.
    A bias on one side only is left as the target has it (never invented), with a note."""
    pairs, notes, one_sided = [], [], set()
    for i in sorted(lams):
        for role in roles:
            for leaf in ("weight", "bias") if bias else ("weight",):
                t_shape = target.shape(i, role, leaf)
                if source is None:
                    if t_shape is not None and (leaf == "weight" or noise_bias):
                        pairs.append(Pair(i, role, leaf, None, lams[i]))
                    continue
                skey = source.role_key(layer_map[i], role, leaf)
                has_source = skey in source
                if t_shape is None or not has_source:
                    if leaf == "bias" and (t_shape is not None or has_source):
                        one_sided.add((role, "target" if t_shape is not None else "source"))
                    elif leaf == "weight" and not has_source:
                        raise SurgeonError(f"{option} {source.path}: no {role} weight in layer {layer_map[i]} ({skey})")
                    continue
                s_info = source.info(skey)
                if tuple(s_info.shape) != t_shape:
                    raise SurgeonError(
                        f"{skey} {list(s_info.shape)} (source layer {layer_map[i]}) does not match the target's "
                        f"layer {i} {role} {leaf} {list(t_shape)}"
                    )
                if not s_info.is_float:
                    raise SurgeonError(f"{source.path}: {skey} is {s_info.dtype}, not a float tensor (quantised?)")
                pairs.append(Pair(i, role, leaf, skey, lams[i]))
    for role, side in sorted(one_sided):
        notes.append(f"{role} bias: only the {side} has one; the weight is merged and the target's bias "
                     f"{'kept as it is' if side == 'target' else 'stays absent'}")
    return pairs, notes
