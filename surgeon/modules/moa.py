"""Mixtures of adapters (paper 000): Dense-MoA (eqs. 1-2) and Soft-MoA (eqs. 3-4).

The N experts are adapters of one shape with their weights stacked ([N, d, b], [N, b, d], ...), so every
projection of all experts is one einsum and the Convpass convolution of all experts one grouped conv:
no Python loop over experts (the reference code's loop made Dense-MoA 3.3x a single adapter).

Tensors are laid out [batch, sequence, expert, channels]; "sequence" is the tokens for Dense-MoA and
the p slots of each expert for Soft-MoA.

Initialisation: experts as their single-adapter counterparts (random down side, zero up side; a
Convpass expert's conv Xavier or identity, `conv_init`), so both mixtures output exactly zero at
first; the router takes nn.Linear's init, Phi Xavier-normal (see reset_parameters).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from surgeon.errors import SurgeonError
from surgeon.modules.common import check_choice, check_positive, check_width, quick_gelu
from surgeon.modules.convpass import CONV_INITS, init_conv_
from surgeon.modules.padding import keep_mask, zero_padded

EXPERTS = ("bottleneck", "convpass")


class ExpertBank(nn.Module):
    """N Bottleneck (Linear -> GELU -> Linear) or Convpass (Linear -> QuickGELU -> Conv1d(b, b, k) over
    the sequence -> QuickGELU -> Linear) adapters with stacked weights."""

    def __init__(self, num_experts: int, d_model: int, bottleneck: int, expert: str = "bottleneck", kernel: int = 3,
                 conv_init: str = "xavier"):
        super().__init__()
        n, d, b = num_experts, d_model, bottleneck
        self.expert, self.num_experts, self.bottleneck, self.conv_init = expert, n, b, conv_init
        self.down_weight = nn.Parameter(torch.empty(n, d, b))
        self.down_bias = nn.Parameter(torch.empty(n, b))
        self.up_weight = nn.Parameter(torch.empty(n, b, d))
        self.up_bias = nn.Parameter(torch.empty(n, d))
        if expert == "convpass":
            # grouped Conv1d weight: expert i owns output channels [i*b, (i+1)*b)
            self.conv_weight = nn.Parameter(torch.empty(n * b, b, kernel))
            self.conv_bias = nn.Parameter(torch.empty(n * b))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        d, b = self.down_weight.shape[1:]
        with torch.no_grad():
            if self.expert == "convpass":  # Convpass's init, expert by expert (same bounds for all)
                nn.init.uniform_(self.down_weight, -math.sqrt(6 / (d + b)), math.sqrt(6 / (d + b)))
                self.down_bias.zero_()
                init_conv_(self.conv_weight, self.conv_bias, self.conv_init)
            else:  # nn.Linear(d, b)'s default init
                bound = 1 / math.sqrt(d)
                nn.init.uniform_(self.down_weight, -bound, bound)
                nn.init.uniform_(self.down_bias, -bound, bound)
            self.up_weight.zero_()
            self.up_bias.zero_()

    def down(self, x: torch.Tensor) -> torch.Tensor:
        """Shared input [B, L, d] or per-expert input [B, L, N, d] -> [B, L, N, b]."""
        spec = "bld,ndk->blnk" if x.dim() == 3 else "blnd,ndk->blnk"
        return torch.einsum(spec, x, self.down_weight) + self.down_bias

    def middle(self, h: torch.Tensor) -> torch.Tensor:
        """Activation (and Convpass's convolution along the sequence axis) on [B, L, N, b]."""
        if self.expert == "bottleneck":
            return F.gelu(h)
        batch, length, n, b = h.shape
        h = quick_gelu(h).permute(0, 2, 3, 1).reshape(batch, n * b, length)
        h = F.conv1d(h, self.conv_weight, self.conv_bias, padding="same", groups=n)
        return quick_gelu(h.reshape(batch, n, b, length).permute(0, 3, 1, 2))

    def up(self, h: torch.Tensor) -> torch.Tensor:
        """Each expert's output: [B, L, N, b] -> [B, L, N, d]."""
        return torch.einsum("blnk,nkd->blnd", h, self.up_weight) + self.up_bias

    def up_mixed(self, h: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """sum_i g_i E_i without materialising the N outputs: [B, L, N, b], gates [B, L, N] -> [B, L, d]."""
        mixed = torch.einsum("blnk,nkd->bld", h * gates.unsqueeze(-1), self.up_weight)
        return mixed + gates @ self.up_bias


def _token_mean(weights, keep):
    """Mean over the real frames of per-token expert weights [B, T, N] -> [B, N]."""
    if keep is None:
        return weights.mean(dim=1)
    k = keep.to(weights.dtype).unsqueeze(-1)
    return (weights * k).sum(dim=1) / k.sum(dim=1).clamp(min=1)


MAX_EXPERT_PARAMETERS = 10**9  # per mixture: above it the allocation itself is the failure


def _check(owner: str, d_model, num_experts, bottleneck, expert, kernel, conv_init) -> None:
    check_width(owner, d_model, bottleneck)
    check_positive(owner, "num_experts", num_experts)
    check_choice(owner, "expert", expert, EXPERTS)
    check_positive(owner, "kernel", kernel)
    check_choice(owner, "conv_init", conv_init, CONV_INITS)
    size = num_experts * (2 * d_model * bottleneck + d_model + bottleneck + (bottleneck * bottleneck * kernel
                                                                             if expert == "convpass" else 0))
    if size > MAX_EXPERT_PARAMETERS:
        raise SurgeonError(f"{owner}: num_experts = {num_experts} experts of bottleneck {bottleneck} at width "
                         f"{d_model} are {size:,} parameters per layer, over {MAX_EXPERT_PARAMETERS:,}")


class DenseMoA(nn.Module):
    """Y = sum_i g_i E_i(X), g = softmax(X W) per token (eqs. 1-2); router Linear(d, N) with bias.
    Parameters N * expert + dN + N."""

    def __init__(self, d_model: int, num_experts: int, bottleneck: int, expert: str = "bottleneck", kernel: int = 3,
                 conv_init: str = "xavier"):
        super().__init__()
        _check("dense-moa", d_model, num_experts, bottleneck, expert, kernel, conv_init)
        self.router = nn.Linear(d_model, num_experts)
        self.experts = ExpertBank(num_experts, d_model, bottleneck, expert, kernel, conv_init)
        self.last_expert_weights = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Router: nn.Linear's default init; experts: zero up side, so the output starts exactly zero."""
        self.router.reset_parameters()
        self.experts.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.softmax(self.router(x), dim=-1)                  # [B, T, N]
        hidden = self.experts.middle(zero_padded(self.experts.down(x)))  # [B, T, N, b]; padded frames: zeros
        self.last_expert_weights = _token_mean(gates.detach(), keep_mask(x))  # [B, N]
        return self.experts.up_mixed(hidden, gates)


class SoftMoA(nn.Module):
    """Soft mixture of adapters (eqs. 3-4): logits X Phi with Phi (d, N, p); dispatch D = softmax over
    tokens, slot inputs D^T X, expert i processes its p slots, combine C = softmax over the N*p slots,
    Y = C Y~. Parameters N * expert + dNp (+1 for the learnable scale when normalize=True).

    normalize=True computes the logits as Soft MoE's authors do: scale * l2norm(X) . l2norm(Phi) over d
    with a learnable scalar scale (init 1); the slots still mix the un-normalised X."""

    def __init__(self, d_model: int, num_experts: int, bottleneck: int, slots: int = 1,
                 expert: str = "bottleneck", kernel: int = 3, normalize: bool = False, conv_init: str = "xavier"):
        super().__init__()
        _check("soft-moa", d_model, num_experts, bottleneck, expert, kernel, conv_init)
        check_positive("soft-moa", "slots", slots)
        self.num_experts, self.slots, self.normalize = num_experts, slots, bool(normalize)
        self.phi = nn.Parameter(torch.empty(d_model, num_experts, slots))
        self.scale = nn.Parameter(torch.ones(())) if self.normalize else None
        self.experts = ExpertBank(num_experts, d_model, bottleneck, expert, kernel, conv_init)
        self.last_expert_weights = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Phi (d, N, p) Xavier-normal as the authors' code (torch's fans of that shape: N p in, d p
        out, std sqrt(2 / (p (N + d)))); experts: zero up side, output exactly zero."""
        with torch.no_grad():
            nn.init.xavier_normal_(self.phi)
            if self.scale is not None:
                self.scale.fill_(1.0)
        self.experts.reset_parameters()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d] -> [B, T, N, p]."""
        if self.normalize:
            return self.scale * torch.einsum("btd,dnp->btnp", F.normalize(x, dim=-1), F.normalize(self.phi, dim=0))
        return torch.einsum("btd,dnp->btnp", x, self.phi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        n, p = self.num_experts, self.slots
        logits = self.logits(x)
        keep = keep_mask(x)  # padded frames get no slot weight (methods/padding.py)
        masked = logits if keep is None else logits.masked_fill(~keep[:, :, None, None], float("-inf"))
        dispatch = torch.softmax(masked, dim=1)                                     # over tokens, per slot
        combine = torch.softmax(logits.reshape(batch, tokens, n * p), dim=-1).reshape(batch, tokens, n, p)
        slot_inputs = torch.einsum("btnp,btd->bpnd", dispatch, x)                   # D^T X: [B, p, N, d]
        slot_outputs = self.experts.up(self.experts.middle(self.experts.down(slot_inputs)))  # [B, p, N, d]
        self.last_expert_weights = _token_mean(combine.detach().sum(dim=-1), keep)  # [B, N]
        return torch.einsum("btnp,bpnd->btd", combine, slot_outputs)                # Y = C Y~
