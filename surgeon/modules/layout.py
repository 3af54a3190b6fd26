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


ORDERS = ("frequency", "time")  # frequency-major (AST, ViT: token f * T + t) or time-major (BEATs: t * F + f)


@dataclass(frozen=True)
class TokenLayout:
    num_special: int
    freq: int
    time: int | None  # None: as many time steps as the sequence holds (BEATs: no fixed input length)
    order: str = "frequency"

    def __post_init__(self):
        if self.num_special < 0 or self.freq < 1 or (self.time is not None and self.time < 1) \
                or self.order not in ORDERS:
            raise SurgeonError(f"token layout: impossible grid {self}")

    @property
    def num_tokens(self) -> int | None:
        return None if self.time is None else self.num_special + self.freq * self.time

    def _time_of(self, x: torch.Tensor) -> int | None:
        if x.dim() != 3:
            return None
        if self.time is not None:
            return self.time if x.shape[1] == self.num_tokens else None
        patches = x.shape[1] - self.num_special
        return patches // self.freq if patches >= self.freq and patches % self.freq == 0 else None

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S + F*T, d] -> (special [B, S, d], grid [B, F, T, d])."""
        time = self._time_of(x)
        if time is None:
            what = f"{self.num_tokens}" if self.time is not None else f"{self.num_special} + {self.freq} x T"
            raise SurgeonError(
                f"token layout: expected [batch, {what}, dim] tokens ({self.num_special} special + "
                f"{self.freq} x {self.time or 'T'} patches, {self.order}-major), got {list(x.shape)}")
        batch, _, dim = x.shape
        special, patches = x[:, : self.num_special], x[:, self.num_special:]
        if self.order == "time":
            return special, patches.reshape(batch, time, self.freq, dim).transpose(1, 2)
        return special, patches.reshape(batch, self.freq, time, dim)

    def merge(self, special: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """(special [B, S, d], grid [B, F, T, d]) -> [B, S + F*T, d]."""
        batch, freq, time, dim = grid.shape
        if self.order == "time":
            grid = grid.transpose(1, 2)
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
