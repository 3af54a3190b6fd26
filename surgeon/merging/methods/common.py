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


def sign_mask(weighted, consensus: Consensus):
    """Per model and element: does its sign agree with the elected sign? (weighted: [n, ...])"""
    import torch

    votes = weighted.sum(dim=0) if consensus == "sum" else weighted.sign().sum(dim=0)
    elected = torch.where(votes >= 0, 1.0, -1.0).to(weighted.dtype)
    return weighted.sign() == elected


def merge_task_vectors(task, *, lam: float, normalize: bool, consensus: Optional[Consensus] = None,
                       sparsify: Optional[Callable] = None):
    """base + lam * (normalised) sum of weighted, sparsified task vectors; see the module docstring.
    sparsify(delta, model_index, density) -> delta, applied where density < 1."""
    import torch

    if task.base is None:
        raise ValueError(f"{task.key}: this method needs the base model's tensor")
    base, weights, densities = task.base, task.weights, task.densities
    shortcut = _exact_input(task, lam, normalize)
    if shortcut is not None:
        return shortcut
    deltas = []
    for i, x in enumerate(task.inputs):
        d = x - base
        if sparsify is not None and densities[i] < 1.0:
            d = sparsify(d, i, densities[i])
        deltas.append(d)
    stacked = torch.stack(deltas)
    w = torch.tensor(weights, dtype=stacked.dtype).reshape((-1,) + (1,) * base.dim())
    weighted = stacked * w
    if consensus is not None:
        mask = sign_mask(weighted, consensus)
        mixed = (weighted * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0)
        divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    else:
        mixed = weighted.sum(dim=0)
        total = float(sum(weights))
        divisor = total if abs(total) >= 1e-8 else 1.0
    if normalize:
        mixed = mixed / divisor
    if lam != 1.0:
        mixed = mixed * lam
    return base + mixed


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
