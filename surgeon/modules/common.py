"""Small pieces the adapter modules share: size checks, QuickGELU, zero-initialising the up side."""
from __future__ import annotations

import torch
from torch import nn

from surgeon.errors import SurgeonError


def check_width(owner: str, d_model: int, bottleneck: int) -> None:
    """A bottleneck narrower than the model, at least 1 wide."""
    for name, value in (("d_model", d_model), ("bottleneck", bottleneck)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SurgeonError(f"{owner}: {name} must be a positive integer, got {value!r}")
    if bottleneck > d_model:
        raise SurgeonError(f"{owner}: bottleneck {bottleneck} is larger than the hidden size {d_model}")


def check_choice(owner: str, name: str, value, choices) -> None:
    if value not in choices:
        raise SurgeonError(f"{owner}: {name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_positive(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SurgeonError(f"{owner}: {name} must be a positive integer, got {value!r}")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the activation of Convpass (CLIP's QuickGELU)."""
    return x * torch.sigmoid(1.702 * x)


def zero_(*modules_or_params) -> None:
    """Zero the weight and bias of modules (or the tensors given): the up side of an adapter."""
    with torch.no_grad():
        for item in modules_or_params:
            tensors = [item] if isinstance(item, torch.Tensor) else [item.weight, item.bias]
            for t in tensors:
                if t is not None:
                    t.zero_()


def identity_centre_(weight: torch.Tensor) -> None:
    """Add the identity to the centre tap of a square conv kernel [C, C/groups, *k] (Convpass's init):
    the convolution starts as a pass-through plus noise."""
    out_channels, in_per_group = weight.shape[:2]
    centre = tuple((k - 1) // 2 for k in weight.shape[2:])
    eye = torch.eye(in_per_group, dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        weight[(slice(None), slice(None)) + centre] += eye.repeat(out_channels // in_per_group, 1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
