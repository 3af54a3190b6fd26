"""dare-linear and dare-ties (DARE, Yu et al. 2024, "Language Models are Super Mario"; mergekit's
`dare_linear` / `dare_ties`): drop each task-vector element with probability 1 - density, rescale the
kept ones by 1 / density (rescale, the default), then sum the weighted vectors (dare-linear) or merge
them with TIES's sign consensus (dare-ties).

The drop mask of model i in tensor `key` comes from its own generator, seeded from (seed, key, i)
as surgeon's noise baselines seed theirs: the same config gives the same merge whatever the order
in which tensors are processed or which other tensors are merged.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from surgeon.merging.methods.common import BaseParams, Consensus, lambda_field, merge_task_vectors

NAMES = ("dare-linear", "dare-ties")
NEEDS_BASE = True
MODELS = (1, None)
USES_WEIGHT = True
USES_DENSITY = True
# one module, two names: what the name decides is the sign consensus
DEFAULTS = {"dare-linear": {"consensus": None}, "dare-ties": {"consensus": "sum"}}


class Params(BaseParams):
    normalize: bool = False
    lambda_: float = lambda_field()
    rescale: bool = True
    seed: int = Field(0, ge=0)
    consensus: Optional[Consensus] = None  # None: dare-linear; "sum" (or "count"): dare-ties


def validate(name: str, params: Params) -> None:
    """Name-specific checks the config runs: dare-linear has no sign consensus, dare-ties needs one."""
    if name == "dare-linear" and params.consensus is not None:
        raise ValueError("consensus: dare-linear has no sign consensus, use method = \"dare-ties\"")
    if name == "dare-ties" and params.consensus is None:
        raise ValueError("consensus: dare-ties needs a sign consensus (\"sum\" or \"count\")")


def keep_mask(shape, density: float, seed: int, key: str, index: int):
    """The elements model `index` keeps in tensor `key`: Bernoulli(density), reproducible."""
    import torch

    from surgeon.merging.noise import tensor_seed

    generator = torch.Generator().manual_seed(tensor_seed(seed, f"{key}#{index}"))
    return torch.rand(tuple(shape), generator=generator, dtype=torch.float32) < density


def drop_and_rescale(delta, density: float, seed: int, key: str, index: int, rescale: bool = True):
    """In place: delta is the merge's own task vector."""
    if density >= 1.0:
        return delta
    delta.mul_(keep_mask(delta.shape, density, seed, key, index))
    return delta.div_(density) if rescale else delta


def combine(task, params: Params):
    return merge_task_vectors(
        task, lam=params.lambda_, normalize=params.normalize, consensus=params.consensus,
        sparsify=lambda d, i, density: drop_and_rescale(d, density, params.seed, task.key, i, params.rescale))
