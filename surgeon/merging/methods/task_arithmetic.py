"""task-arithmetic (Ilharco et al. 2023; mergekit's `task_arithmetic`):
result = base + lambda * sum_i w_i (x_i - base), divided by sum_i w_i when normalize (default off)."""
from __future__ import annotations

from surgeon.merging.methods.common import BaseParams, lambda_field, merge_task_vectors

NAMES = ("task-arithmetic",)
NEEDS_BASE = True
MODELS = (1, None)
USES_WEIGHT = True
USES_DENSITY = False


class Params(BaseParams):
    normalize: bool = False
    lambda_: float = lambda_field()


def combine(task, params: Params):
    return merge_task_vectors(task, lam=params.lambda_, normalize=params.normalize)
