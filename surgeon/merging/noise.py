"""The noise baselines of paper 003 (Table 1): interpolate with Gaussian noise instead of a source.

The paper draws "samples with the same mean and variance as the parameters of the source and target
models" and shapes them as the target's attention matrices: statistics of the *model*, not of each
matrix, and a statistics model of any shape. `--noise-stats model` (the default, the paper's reading)
pools the mean and variance of the statistics model's q/k/v weights over all its layers (its biases
pooled apart); `--noise-stats tensor` takes them per matrix, from the same role of the corresponding
layer (layer i of n_t maps to layer i * n_s // n_t of a model with n_s layers). N(0, 1) replaces
weights only: a bias drawn from N(0, 1) is no baseline the paper describes, so biases stay the target's.

Each tensor has its own generator seeded from --seed and the tensor's name, so a tensor's noise does
not depend on the order of the merge or on which other layers are merged.
"""
from __future__ import annotations

import hashlib

KINDS = ("source", "target", "normal")
STATS = ("model", "tensor")


def tensor_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def gaussian_like(shape, seed: int, name: str, reference=None, *, mean=None, std=None):
    """float32 noise of `shape` (numpy), scaled to `reference`'s mean and (population) variance, or
    to the given mean and std; N(0, 1) with neither."""
    import numpy as np

    z = np.random.default_rng(tensor_seed(seed, name)).standard_normal(tuple(shape), dtype=np.float32)
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64)
        mean, std = ref.mean(), ref.std()
    if mean is None:
        return z
    z *= np.float32(std)
    z += np.float32(mean)
    return z


def model_stats(ckpt, keys) -> tuple[float, float]:
    """Mean and population std pooled over the tensors `keys` of `ckpt`, read one at a time (float64 sums)."""
    import numpy as np

    from surgeon.merging.stream import read_float32

    n = s = ss = 0.0
    for key in keys:
        a = read_float32(ckpt, key).astype(np.float64)
        n, s, ss = n + a.size, s + a.sum(), ss + np.square(a).sum()
    mean = s / n
    return float(mean), float(max(ss / n - mean * mean, 0.0) ** 0.5)


def stats_layer(i: int, num_target: int, num_stats: int) -> int:
    return i * num_stats // num_target
