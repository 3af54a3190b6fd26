"""The papers' optimiser: AdamW with a learning rate per parameter group and cosine decay stepped
per optimiser step (per batch, or per `grad_accum` batches), with an optional linear warm-up.

Weight decay applies to every trainable parameter, as in the reference set-up (petl-facts.md).
"""
from __future__ import annotations

import math

import torch

from surgeon.errors import SurgeonError


def build_optimizer(groups: dict[str, list], lrs: dict[str, float], *, betas=(0.9, 0.98), eps=1e-6,
                    weight_decay=0.1) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of each named group ({"method": [...], ...})."""
    param_groups = []
    seen: set[int] = set()
    for name, params in groups.items():
        trainable = [p for p in params if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in trainable)
        if trainable:
            param_groups.append({"params": trainable, "lr": lrs[name], "name": name})
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
