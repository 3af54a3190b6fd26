"""mam (Multimodal Attention Merging, paper 003) from a merge config: the one [[models]] entry (a text
or image model, the source) is interpolated into `base` (a speech or audio model, the target, whose
layout is written), on the attention roles q, k, v by default (`roles` to choose others):

    W = lam * W_source + (1 - lam) * W_target

as `surgeon merge --source --target --lam` does, through the same plan (surgeon/merging/plan.py).
The two models are of different families, so this method builds its own plan (`build`) rather than
the same-family one; `lam` may be given per layer or per role (surgeon/merging/settings.py).
"""
from __future__ import annotations

from typing import Optional, Union

from pydantic import Field

from surgeon.merging.methods.common import BaseParams

NAMES = ("mam",)
NEEDS_BASE = True  # the target
MODELS = (1, 1)  # the source
USES_WEIGHT = False
USES_DENSITY = False
WEIGHT_HINT = "the source's share is lam in [parameters]"
PATH_PARAMETERS = ("layers_from",)  # resolved against the config's folder
ROLES = ("q", "k", "v")


class Params(BaseParams):
    lam: float = Field(ge=0.0, le=1.0, description="0 keeps the target, 1 takes the source")
    layers: Optional[Union[str, list[int]]] = None  # target layers, "4-11" or [4, 5]; default all
    layers_from: Optional[str] = None  # a select-layers selection.json
    layer_map: Optional[str] = None  # "SOURCE:TARGET,..." for models of different depths
    bias: bool = True  # the q/k/v biases too


def combine(task, params: Params):
    """The interpolation on one tensor (base = target, inputs = (source,)): the float32 steps of
    surgeon.merging.mam.interpolate (a lerp from the nearer end, a multiply then an add), in torch."""
    import torch

    source, target = task.inputs[0], task.base
    lam = torch.tensor(params.lam, dtype=torch.float32)
    diff = source - target
    if params.lam < 0.5:
        return target + diff * lam
    return source - diff * (1.0 - lam)


def build(config, *, allow_pickle: bool = False):
    """The MAM plan of a config (a surgeon.merging.plan.MergePlan)."""
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.merging.plan import build_plan, open_source
    from surgeon.merging.settings import where_in

    target = Checkpoint.open(config.base, allow_pickle=allow_pickle)
    source = open_source(config.models[0].ref, target, allow_pickle=allow_pickle)
    p = config.params
    layers = ",".join(map(str, p.layers)) if isinstance(p.layers, list) else p.layers

    def lam_at(key: str, role: str) -> float:
        return config.values_at(where_in(target, key))[2].lam

    return build_plan(target, source, lam_at, layers=layers, layers_from=p.layers_from, layer_map=p.layer_map,
                      bias=p.bias, dtype=config.dtype, roles=tuple(config.roles or ROLES))
