"""Mixup of training items (`[data.mixup]`), as AST's recipes train Speech Commands (paper 004 too).

With probability p a training item is mixed with another training item drawn at random:
x = lam * x_i + (1 - lam) * x_j with lam ~ Beta(alpha, alpha), and its target becomes the soft label
lam * onehot(y_i) + (1 - lam) * onehot(y_j), trained with the soft-target cross-entropy. AST mixes
the waveforms (the second cut or zero-padded to the first's length) and computes the fbank of the
mix; `mix = "features"` mixes the (cached) features instead, which is cheaper.

Every draw (whether to mix, the partner, lam) comes from a generator seeded by (seed, epoch, item),
like the SpecAugment masks: the same in every run, with any number of data workers, and after a resume.
alpha = 0 or probability = 0 mixes nothing (lam = 1 is the item itself).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MixupSpec:
    probability: float
    alpha: float = 10.0
    mix: str = "waveform"  # or "features"
    num_classes: int = 0

    @property
    def active(self) -> bool:
        return self.probability > 0 and self.alpha > 0


@dataclass(frozen=True)
class Draw:
    partner: int  # index of the item mixed in
    lam: float  # weight of the item itself


def draw(spec: MixupSpec, seed: int, epoch: int, key: str, num_items: int) -> Draw | None:
    """Whether this item is mixed in this epoch, with which item and how much (None: not mixed)."""
    import numpy as np

    if not spec.active or num_items < 2:
        return None
    h = hashlib.sha256(f"mixup\0{seed}\0{epoch}\0{key}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(h[:8], "little"))
    if rng.random() >= spec.probability:
        return None
    return Draw(partner=int(rng.integers(num_items)), lam=float(rng.beta(spec.alpha, spec.alpha)))


def mix(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * a + (1 - lam) * b, with b cut or zero-padded along dimension 0 to a's length."""
    from surgeon.data.features import pad_or_cut

    if b.shape[0] != a.shape[0]:
        b = pad_or_cut(b, a.shape[0])
    return lam * a + (1 - lam) * b


def soft_target(label: int, other: int, lam: float, num_classes: int) -> torch.Tensor:
    """lam * onehot(label) + (1 - lam) * onehot(other): sums to one."""
    t = torch.zeros(num_classes)
    t[label] += lam
    t[other] += 1 - lam
    return t


def one_hot(label: int, num_classes: int) -> torch.Tensor:
    return soft_target(label, label, 1.0, num_classes)
