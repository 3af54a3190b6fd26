"""What the task-vector methods share (mergekit's "generalized task arithmetic"): task vectors, an
optional sparsification per model (TIES's magnitude trim, DARE's random drop), an optional sign
consensus, the weighted sum, the optional normalisation and the lambda scale.

    deltas_i  = sparsify_i(x_i - base)
    wd_i      = w_i * deltas_i
    mask_i    = sign(wd_i) == elected sign       (consensus only; elected = sign of sum_i wd_i, or of
                                                  sum_i sign(wd_i) for "count"; 0 elects +)
    mixed     = sum_i wd_i * mask_i
    divisor   = sum_i w_i * mask_i  (consensus; 0 -> 1)   or   sum_i w_i  (|.| < 1e-8 -> 1)
    result    = base + lambda * (mixed / divisor if normalize else mixed)
"""
from __future__ import annotations

from typing import Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

Consensus = Literal["sum", "count"]


class BaseParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def lambda_field():
    # `lambda` is a Python keyword: the attribute is lambda_, the config key (and mergekit's) is lambda
    return Field(1.0, alias="lambda", allow_inf_nan=False, description="scale of the merged task vector")


def magnitude_trim(delta, density: float):
    """Keep the top `density` fraction of `delta` by magnitude (k = int(density * numel), at least 1, as
    mergekit counts), zero the rest."""
    import torch

    if density >= 1.0:
        return delta
    k = max(1, int(density * delta.numel()))
    out = torch.zeros_like(delta)
    if delta.numel():
        flat = delta.reshape(-1)
        keep = torch.topk(flat.abs(), k, sorted=False).indices
        out.view(-1)[keep] = flat[keep]
    return out


def elected_positive(weighted: list, consensus: Consensus):
    """Per element: is the elected sign + ? (the sign of the sum of the weighted vectors, or of the sum
    of their signs for "count"; a tie elects +)."""
    votes = None
    for wd in weighted:
        v = wd if consensus == "sum" else wd.sign()
        votes = v.clone() if votes is None else votes.add_(v)
    return votes >= 0


def merge_task_vectors(task, *, lam: float, normalize: bool, consensus: Optional[Consensus] = None,
                       sparsify: Optional[Callable] = None):
    """base + lam * (normalised) sum of weighted, sparsified task vectors; see the module docstring.
    sparsify(delta, model_index, density) -> delta, applied where density < 1. One model at a time,
    accumulated in place: memory is the n weighted vectors plus a few tensors."""
    import torch

    if task.base is None:
        raise ValueError(f"{task.key}: this method needs the base model's tensor")
    base, weights, densities = task.base, task.weights, task.densities
    shortcut = _exact_input(task, lam, normalize)
    if shortcut is not None:
        return shortcut
    weighted = []
    for i, x in enumerate(task.inputs):
        d = x - base
        if sparsify is not None and densities[i] < 1.0:
            d = sparsify(d, i, densities[i])
        weighted.append(d.mul_(weights[i]))
    if consensus is not None:
        elected = torch.where(elected_positive(weighted, consensus), 1.0, -1.0).to(base.dtype)
        mixed = torch.zeros_like(base)
        divisor = torch.zeros_like(base)
        for w, wd in zip(weights, weighted):
            agree = (wd * elected > 0).to(base.dtype)  # a zero agrees with neither sign
            mixed.addcmul_(wd, agree)
            divisor.add_(agree, alpha=w)
        divisor.masked_fill_(divisor == 0, 1.0)
    else:
        mixed = weighted[0]
        for wd in weighted[1:]:
            mixed.add_(wd)
        total = float(sum(weights))
        divisor = total if abs(total) >= 1e-8 else 1.0
    if normalize:
        mixed = mixed.div_(divisor)
    if lam != 1.0:
        mixed = mixed.mul_(lam)
    return mixed.add_(base)


def _exact_input(task, lam: float, normalize: bool):
    """Where the result is one input by construction, that input bit for bit (base + (x - base) is
    x only up to rounding): every weight 0 gives the base; one model with a non-zero weight, kept
    whole (density 1), with an effective coefficient of exactly 1 gives that model."""
    nonzero = [i for i, w in enumerate(task.weights) if w != 0.0]
    if not nonzero or lam == 0.0:
        return task.base.clone()
    if len(nonzero) == 1:
        i = nonzero[0]
        coefficient = lam if normalize else lam * task.weights[i]
        if coefficient == 1.0 and task.densities[i] >= 1.0:
            return task.inputs[i].clone()
    return None
