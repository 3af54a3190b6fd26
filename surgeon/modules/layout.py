"""Where the patch grid lies in a token sequence, for adapters that convolve over it.

A ViT-style encoder sees `[special tokens..., patches]`: AST has [CLS, DIST] then a freq x time grid
flattened frequency-major (all time steps of the first frequency row, then the next row); ViT has
[CLS] then an h x w grid row-major, h playing "frequency". The framework builds a TokenLayout from the
model's config and assigns it to `module.layout` before the first forward.

Special tokens have no neighbours on the grid. `grid_conv` treats each of them as a 1 x 1 grid with
zero padding (as the original Convpass does for [CLS]): only the kernel's centre tap sees them, so a
grid convolution acts on them as a pointwise (linear) map and never mixes them with patches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from surgeon.errors import SurgeonError


@dataclass(frozen=True)
class TokenLayout:
    num_special: int
    freq: int
    time: int

    def __post_init__(self):
        if self.num_special < 0 or self.freq < 1 or self.time < 1:
            raise SurgeonError(f"token layout: impossible grid {self}")

    @property
    def num_tokens(self) -> int:
        return self.num_special + self.freq * self.time

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S + F*T, d] -> (special [B, S, d], grid [B, F, T, d])."""
        if x.dim() != 3 or x.shape[1] != self.num_tokens:
            raise SurgeonError(
                f"token layout: expected [batch, {self.num_tokens}, dim] tokens ({self.num_special} special + "
                f"{self.freq} x {self.time} patches), got {list(x.shape)}")
        batch, _, dim = x.shape
        special, patches = x[:, : self.num_special], x[:, self.num_special:]
        return special, patches.reshape(batch, self.freq, self.time, dim)

    def merge(self, special: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """(special [B, S, d], grid [B, F, T, d]) -> [B, S + F*T, d]."""
        batch, freq, time, dim = grid.shape
        return torch.cat([special, grid.reshape(batch, freq * time, dim)], dim=1)


def require_layout(module: nn.Module) -> TokenLayout:
    layout = getattr(module, "layout", None)
    if layout is None:
        raise SurgeonError(
            f"{type(module).__name__}: no token layout set; it convolves over the patch grid, so assign "
            f"module.layout = TokenLayout(num_special, freq, time) before the first forward")
    return layout


def grid_conv(x: torch.Tensor, layout: TokenLayout, conv: nn.Conv2d) -> torch.Tensor:
    """Apply a 2-D convolution ('same' padding) over the patch grid of tokens x [B, L, C_in] -> [B, L, C_out].

    Patches are convolved as the [F, T] image they came from (height = frequency, width = time);
    each special token as its own 1 x 1 image (module docstring)."""
    special, grid = layout.split(x)
    batch, num_special, channels = special.shape
    grid_out = conv(grid.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # [B, F, T, C_out]
    special_out = conv(special.reshape(batch * num_special, channels, 1, 1))
    return layout.merge(special_out.reshape(batch, num_special, grid_out.shape[-1]), grid_out)
