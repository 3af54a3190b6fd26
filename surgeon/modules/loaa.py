"""Look-Aside Adapter (LoAA, paper 004): a bottleneck adapter whose two projections are 1-D convolutions
along one axis of the patch grid, h -> f(h U_down) U_up (eq. 2).

axis="time": kernel 1 x k (along time); axis="frequency": kernel k x 1; k = 3 in the paper.
U_down: Conv2d(d, b), U_up: Conv2d(b, d), same kernel, 'same' padding, biases; f = GELU.
Parameters 2kdb + b + d (4608b + 768 at d = 768, k = 3; r = 36 gives 166,692 per adapter).
The grid comes from `self.layout`; special tokens see only the centre tap (see layout.py). LoAA needs
non-overlapping patches so that grid neighbours are spectrogram neighbours: the framework checks that.
"""
from __future__ import annotations

from torch import nn

from surgeon.modules.common import check_choice, check_positive, check_width, zero_
from surgeon.modules.layout import grid_conv, require_layout

AXES = {"time": lambda k: (1, k), "frequency": lambda k: (k, 1)}  # Conv2d kernel (height=freq, width=time)


class LookAsideAdapter(nn.Module):
    def __init__(self, d_model: int, bottleneck: int, axis: str = "time", kernel: int = 3):
        super().__init__()
        check_width("loaa", d_model, bottleneck)
        check_choice("loaa", "axis", axis, tuple(AXES))
        check_positive("loaa", "kernel", kernel)
        self.axis = axis
        shape = AXES[axis](kernel)
        self.down = nn.Conv2d(d_model, bottleneck, shape, padding="same")
        self.act = nn.GELU()
        self.up = nn.Conv2d(bottleneck, d_model, shape, padding="same")
        self.layout = None  # TokenLayout, assigned by the framework
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.down.reset_parameters()
        zero_(self.up)

    def forward(self, x):
        layout = require_layout(self)
        return grid_conv(self.act(grid_conv(x, layout, self.down)), layout, self.up)
