"""Convpass adapter (Jie & Deng): Linear(d, b) -> QuickGELU -> conv -> QuickGELU -> Linear(b, d).

conv="1d" (default, what the PETL papers count): Conv1d(b, b, k, 'same') over the token axis,
parameters 2db + d + b + k b^2 + b  (1538b + 3b^2 + 768 at d = 768, k = 3).
conv="2d": Conv2d(b, b, k x k, 'same') over the patch grid given by `self.layout` (the original ViT
Convpass); special tokens see only the centre tap (see layout.py). Parameters 1538b + k^2 b^2 + 768.
"""
from __future__ import annotations

from torch import nn

from surgeon.modules.common import check_choice, check_positive, check_width, identity_centre_, quick_gelu, zero_
from surgeon.modules.layout import grid_conv, require_layout


class Convpass(nn.Module):
    def __init__(self, d_model: int, bottleneck: int, kernel: int = 3, conv: str = "1d"):
        super().__init__()
        check_width("convpass", d_model, bottleneck)
        check_positive("convpass", "kernel", kernel)
        check_choice("convpass", "conv", conv, ("1d", "2d"))
        self.conv_kind = conv
        self.down = nn.Linear(d_model, bottleneck)
        conv_class = nn.Conv1d if conv == "1d" else nn.Conv2d
        self.conv = conv_class(bottleneck, bottleneck, kernel, padding="same")
        self.up = nn.Linear(bottleneck, d_model)
        self.layout = None  # TokenLayout, needed by conv="2d"
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Convpass's init: Xavier down side and conv (the conv plus identity on its centre tap), zero
        biases, and a zero up side, so the output starts exactly zero."""
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        identity_centre_(self.conv.weight)
        zero_(self.up)

    def token_conv(self, h):
        """The convolution over tokens, h [B, L, b] -> [B, L, b]."""
        if self.conv_kind == "2d":
            return grid_conv(h, require_layout(self), self.conv)
        return self.conv(h.transpose(1, 2)).transpose(1, 2)

    def forward(self, x):
        h = quick_gelu(self.down(x))
        h = quick_gelu(self.token_conv(h))
        return self.up(h)
