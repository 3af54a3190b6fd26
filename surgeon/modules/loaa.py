"""Look-Aside Adapter (LoAA, paper 004): a bottleneck adapter whose two projections are convolutions over
the patch grid, h -> f(h U_down) U_up (eq. 2).

axis="time": kernel 1 x k (along time); "frequency": k x 1; "grid": k x k (Table 1's (3,3) kernel);
k = 3 in the paper, k = 1 gives Table 1's (1,1), a linear parallel adapter. U_down: Conv2d(d, b),
U_up: Conv2d(b, d), same kernel, 'same' padding; f = GELU. No biases by default: paper 004's counts
are exactly 2 k d b per adapter (k taps; r = 36 at d = 768: 165,888, 1,990,656 over 12 layers);
bias=True adds b + d.
The grid comes from `self.layout`; special tokens see only the centre tap (see layout.py). LoAA needs
non-overlapping patches so that grid neighbours are spectrogram neighbours: the framework checks that.
"""
from __future__ import annotations

from torch import nn

from surgeon.modules.common import check_choice, check_positive, check_width, zero_
from surgeon.modules.layout import grid_conv, require_layout

# Conv2d kernel shape (height = frequency, width = time) per axis
AXES = {"time": lambda k: (1, k), "frequency": lambda k: (k, 1), "grid": lambda k: (k, k)}


class LookAsideAdapter(nn.Module):
    def __init__(self, d_model: int, bottleneck: int, axis: str = "time", kernel: int = 3, bias: bool = False):
        super().__init__()
        check_width("loaa", d_model, bottleneck)
        check_choice("loaa", "axis", axis, tuple(AXES))
        check_positive("loaa", "kernel", kernel)
        self.axis = axis
        shape = AXES[axis](kernel)
        self.down = nn.Conv2d(d_model, bottleneck, shape, padding="same", bias=bool(bias))
        self.act = nn.GELU()
        self.up = nn.Conv2d(bottleneck, d_model, shape, padding="same", bias=bool(bias))
        self.layout = None  # TokenLayout, assigned by the framework
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.down.reset_parameters()
        zero_(self.up)

    def forward(self, x):
        layout = require_layout(self)
        return grid_conv(self.act(grid_conv(x, layout, self.down)), layout, self.up)
