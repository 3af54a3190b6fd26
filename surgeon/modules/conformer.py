"""Conformer adapter (paper 001): the Conformer's convolution module as an adapter.

LayerNorm -> pointwise d -> 2b -> GLU -> depthwise conv k over tokens ('same') -> BatchNorm -> Swish
-> pointwise b -> d, all with biases. Parameters 2d (LN) + 2db + 2b + bk + b + 2b (BN) + bd + d
= 2304 + 2309b + bk at d = 768. The pointwise convolutions are Linear layers (the same map).
BatchNorm keeps running statistics in buffers (running_mean, running_var, num_batches_tracked): they
are part of the trained adapter and must be saved with it.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from surgeon.modules.common import check_positive, check_width, zero_
from surgeon.modules.padding import zero_padded


class ConformerAdapter(nn.Module):
    def __init__(self, d_model: int, bottleneck: int, kernel: int = 31):
        super().__init__()
        check_width("conformer", d_model, bottleneck)
        check_positive("conformer", "kernel", kernel)
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_down = nn.Linear(d_model, 2 * bottleneck)
        self.glu = nn.GLU(dim=-1)
        self.depthwise = nn.Conv1d(bottleneck, bottleneck, kernel, groups=bottleneck)
        self.padding = ((kernel - 1) // 2, kernel // 2)  # 'same', also for even k (paper 001 uses k = 8)
        self.batch_norm = nn.BatchNorm1d(bottleneck)
        self.swish = nn.SiLU()
        self.pointwise_up = nn.Linear(bottleneck, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh LayerNorm/BatchNorm, random down side and depthwise conv, zero up side (output exactly zero)."""
        self.norm.reset_parameters()
        self.pointwise_down.reset_parameters()
        self.depthwise.reset_parameters()
        self.batch_norm.reset_parameters()  # also resets the running statistics
        zero_(self.pointwise_up)

    def forward(self, x):
        h = zero_padded(self.glu(self.pointwise_down(self.norm(x))))  # [B, L, b]; padded frames: zeros
        h = self.depthwise(F.pad(h.transpose(1, 2), self.padding))  # [B, b, L]: convolve along tokens
        h = self.swish(self.batch_norm(h)).transpose(1, 2)
        return self.pointwise_up(h)
