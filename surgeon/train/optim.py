"""The papers' optimiser: AdamW with a learning rate per parameter group and cosine decay stepped
per optimiser step (per batch, or per `grad_accum` batches), with an optional linear warm-up.

Weight decay applies to every trainable parameter, as in the reference set-up (petl-facts.md), except
those a module lists in its `no_weight_decay` attribute (names of its own parameters): Learnable-MAM's
lam, whose decay would pull it toward 0.5. They get a group of their own ("<group>.no_decay", same rate).
"""
from __future__ import annotations

import math

import torch

from surgeon.errors import SurgeonError


def no_decay_parameters(model) -> list:
    """The parameters that modules of `model` exclude from weight decay (their `no_weight_decay` names)."""
    return [getattr(m, name) for m in model.modules() for name in getattr(m, "no_weight_decay", ())]


def build_optimizer(groups: dict[str, list], lrs: dict[str, float], *, betas=(0.9, 0.98), eps=1e-6,
                    weight_decay=0.1, no_decay=()) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of each named group ({"method": [...], ...}); those in
    `no_decay` (e.g. no_decay_parameters(model)) without weight decay, in a group "<name>.no_decay"."""
    param_groups = []
    seen: set[int] = set()
    exempt = {id(p) for p in no_decay}
    for name, params in groups.items():
        trainable = [p for p in params if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in trainable)
        decayed = [p for p in trainable if id(p) not in exempt]
        free = [p for p in trainable if id(p) in exempt]
        if decayed:
            param_groups.append({"params": decayed, "lr": lrs[name], "name": name})
        if free:
            param_groups.append({"params": free, "lr": lrs[name], "name": f"{name}.no_decay", "weight_decay": 0.0})
    if not param_groups:
        raise SurgeonError("method: nothing to train (no parameter requires a gradient)")
    return torch.optim.AdamW(param_groups, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def lr_factor(step: int, total: int, warmup: int = 0, kind: str = "cosine") -> float:
    """Multiplier of the base rate at optimiser step `step` (0-based) of `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, total_steps: int, warmup: int = 0, kind: str = "cosine"):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup, kind))
