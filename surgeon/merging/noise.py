"""The noise baselines of paper 003 (Table 1): interpolate with Gaussian noise instead of a source.

noise:source and noise:target draw, for each merged matrix, samples with the mean and variance of the
corresponding source (or target) matrix; noise:normal draws N(0, 1). Each tensor has its own
generator seeded from --seed and the tensor's name, so a tensor's noise does not depend on the order
of the merge or on which other layers are merged.
"""
from __future__ import annotations

import hashlib


def tensor_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def gaussian_like(shape, seed: int, name: str, reference=None):
    """float32 noise of `shape` (numpy); with `reference`, scaled to its mean and (population) variance."""
    import numpy as np

    z = np.random.default_rng(tensor_seed(seed, name)).standard_normal(tuple(shape), dtype=np.float32)
    if reference is None:
        return z
    ref = np.asarray(reference, dtype=np.float64)
    z *= np.float32(ref.std())
    z += np.float32(ref.mean())
    return z
