"""Convpass adapter (Jie & Deng): Linear(d, b) -> QuickGELU -> conv -> QuickGELU -> Linear(b, d).

conv="1d" (default, what the PETL papers count): Conv1d(b, b, k, 'same') over the token axis,
parameters 2db + d + b + k b^2 + b  (1538b + 3b^2 + 768 at d = 768, k = 3).
conv="2d": Conv2d(b, b, k x k, 'same') over the patch grid given by `self.layout` (the original ViT
Convpass); special tokens see only the centre tap (see layout.py). Parameters 1538b + k^2 b^2 + 768.

The convolution starts as one of the Convpass authors' two choices (CONV_INITS), never a mix:
"xavier" (Xavier-uniform, what the PETL papers' code uses) or "identity" (zeros plus the identity
on the centre tap, a pass-through).
"""
from __future__ import annotations

import math

from surgeon.modules.padding import zero_padded

import torch
from torch import nn

from surgeon.modules.common import check_choice, check_positive, check_width, identity_centre_, quick_gelu, zero_
from surgeon.modules.layout import grid_conv, require_layout

CONV_INITS = ("xavier", "identity")


def init_conv_(weight, bias, conv_init: str) -> None:
    """Convpass's conv init: Xavier-uniform, or zeros plus the identity on the centre tap; zero bias.
    The conv maps b channels to b, so fan in = fan out = b * taps; a grouped weight [groups * b, b,
    taps...] (the MoA's stacked experts) gets each group's own Xavier bound, sqrt(6 / (2 b taps))."""
    with torch.no_grad():
        if conv_init == "xavier":
            fan = weight.shape[1] * weight[0, 0].numel()
            bound = math.sqrt(6.0 / (2 * fan))
            nn.init.uniform_(weight, -bound, bound)
        else:
            weight.zero_()
            identity_centre_(weight)
        if bias is not None:
            bias.zero_()


class Convpass(nn.Module):
    def __init__(self, d_model: int, bottleneck: int, kernel: int = 3, conv: str = "1d", conv_init: str = "xavier"):
        super().__init__()
        check_width("convpass", d_model, bottleneck)
        check_positive("convpass", "kernel", kernel)
        check_choice("convpass", "conv", conv, ("1d", "2d"))
        check_choice("convpass", "conv_init", conv_init, CONV_INITS)
        self.conv_kind, self.conv_init = conv, conv_init
        self.down = nn.Linear(d_model, bottleneck)
        conv_class = nn.Conv1d if conv == "1d" else nn.Conv2d
        self.conv = conv_class(bottleneck, bottleneck, kernel, padding="same")
        self.up = nn.Linear(bottleneck, d_model)
        self.layout = None  # TokenLayout, needed by conv="2d"
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Convpass's init: Xavier down side, the conv as `conv_init` says, zero biases, and a zero up
        side, so the output starts exactly zero."""
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        init_conv_(self.conv.weight, self.conv.bias, self.conv_init)
        zero_(self.up)

    def token_conv(self, h):
        """The convolution over tokens, h [B, L, b] -> [B, L, b]."""
        if self.conv_kind == "2d":
            return grid_conv(h, require_layout(self), self.conv)
        return self.conv(h.transpose(1, 2)).transpose(1, 2)

    def forward(self, x):
        h = zero_padded(quick_gelu(self.down(x)))  # padded frames enter the conv as zeros (methods/padding.py)
        h = quick_gelu(self.token_conv(h))
        return self.up(h)
