"""Bottleneck adapter: Linear(d, b) -> GELU -> Linear(b, d). Parameters 2db + b + d (1537b + 768 at d = 768)."""
from __future__ import annotations

from torch import nn

from surgeon.modules.common import check_width, zero_


class Bottleneck(nn.Module):
    def __init__(self, d_model: int, bottleneck: int):
        super().__init__()
        check_width("bottleneck", d_model, bottleneck)
        self.down = nn.Linear(d_model, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random down side, zero up side: the output starts exactly zero and the up side gets gradients."""
        self.down.reset_parameters()
        zero_(self.up)

    def forward(self, x):
        return self.up(self.act(self.down(x)))
