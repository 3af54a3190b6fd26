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
    """sum_i w_i x_i (then / sum_i w_i), in cache-sized chunks straight into the output."""
    import torch

    from surgeon.merging.methods.common import CHUNK, chunks

    total = float(sum(task.weights))
    if params.normalize and total == 0.0:
        raise SurgeonError(f"{task.key}: linear with normalize needs weights that do not sum to 0")
    inputs = [x.reshape(-1) for x in task.inputs]
    out = torch.empty_like(inputs[0])
    buf = torch.empty(min(CHUNK, out.numel()), dtype=out.dtype)
    for part in chunks(out.numel()):
        acc = torch.mul(inputs[0][part], task.weights[0], out=out[part])
        for w, x in zip(task.weights[1:], inputs[1:]):
            acc.add_(x[part] if w == 1.0 else torch.mul(x[part], w, out=buf[: acc.numel()]))  # x * 1.0 is x
        if params.normalize and total != 1.0:
            acc.div_(total)
    return out.reshape(task.inputs[0].shape)
