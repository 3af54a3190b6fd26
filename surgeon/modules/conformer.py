"""Conformer adapter (paper 001): the Conformer's convolution module as an adapter.

LayerNorm -> pointwise d -> 2b -> GLU -> depthwise conv k over tokens ('same') -> BatchNorm -> Swish
-> pointwise b -> d, all with biases. Parameters 2d (LN) + 2db + 2b + bk + b + 2b (BN) + bd + d
= 2304 + 2309b + bk at d = 768. The pointwise convolutions are Linear layers (the same map).
BatchNorm keeps running statistics in buffers (running_mean, running_var, num_batches_tracked): they
are part of the trained adapter and must be saved with it. In a padded speech batch, its training
statistics are taken over the real frames only (MaskedBatchNorm1d), so padding neither shifts the
normalisation of real frames nor the running statistics; without padding it is nn.BatchNorm1d.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from surgeon.modules.common import check_positive, check_width, zero_
from surgeon.modules.padding import keep_mask, zero_padded


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over [B, C, L] whose training statistics count only the frames `keep` [B, L] marks
    real (the same state dict; eval, or no mask, is nn.BatchNorm1d's own forward)."""

    def forward(self, x, keep=None):
        if keep is None or not self.training or bool(keep.all()):
            return super().forward(x)
        w = keep[:, None, :].to(x.dtype)
        n = w.sum()
        mean = (x * w).sum((0, 2)) / n
        var = ((x - mean[None, :, None]).square() * w).sum((0, 2)) / n  # biased, as BatchNorm normalises
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1) if n > 1 else var.detach()  # as BatchNorm keeps it
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = (x - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None] + self.bias[None, :, None]
        return y


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
        self.batch_norm = MaskedBatchNorm1d(bottleneck)
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
        h = self.swish(self.batch_norm(h, keep_mask(x))).transpose(1, 2)  # statistics of real frames
        return self.pointwise_up(h)
