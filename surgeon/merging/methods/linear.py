"""linear: the weighted average of the models' tensors (mergekit's `linear`; Wortsman et al.'s
model soups). result = sum_i w_i x_i, divided by sum_i w_i when normalize (the default)."""
from __future__ import annotations

from surgeon.errors import SurgeonError
from surgeon.merging.methods.common import BaseParams

NAMES = ("linear",)
NEEDS_BASE = False
MODELS = (1, None)
USES_WEIGHT = True
USES_DENSITY = False


class Params(BaseParams):
    normalize: bool = True


def combine(task, params: Params):
    out = None
    for w, x in zip(task.weights, task.inputs):
        term = x * w
        out = term if out is None else out.add_(term)
    if params.normalize:
        total = float(sum(task.weights))
        if total == 0.0:
            raise SurgeonError(f"{task.key}: linear with normalize needs weights that do not sum to 0")
        if total != 1.0:
            out = out / total
    return out
