"""ties (TIES-Merging, Yadav et al. 2023; mergekit's `ties`): trim each task vector to its top
`density` fraction by magnitude, elect each element's sign by the sign of the sum of the weighted
trimmed vectors, sum the weighted vectors agreeing with it (a disjoint mean with normalize: divided
by the sum of the agreeing weights), scale by lambda, add to the base."""
from __future__ import annotations

from surgeon.merging.methods.common import BaseParams, Consensus, lambda_field, magnitude_trim_, merge_task_vectors

NAMES = ("ties",)
NEEDS_BASE = True
MODELS = (1, None)
USES_WEIGHT = True
USES_DENSITY = True


class Params(BaseParams):
    normalize: bool = True
    lambda_: float = lambda_field()
    consensus: Consensus = "sum"  # "count": elect by the number of positive vs negative signs


def combine(task, params: Params):
    return merge_task_vectors(task, lam=params.lambda_, normalize=params.normalize, consensus=params.consensus,
                              sparsify=lambda d, i, density: magnitude_trim_(d, density))
