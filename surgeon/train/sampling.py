"""Which items each process reads, in which order.

Training: the recipe's `train.batch_size` is the global batch. Every epoch has one seeded order of
the whole training set (a function of seed and epoch only, so a resumed run reads exactly what the
uninterrupted one would), cut into global batches; with N processes each rank takes every N-th item
of every global batch. The per-rank losses are weighted by their share of the global batch (see
loop.fit), so N processes compute the gradient of the same global batch as one process does.

Evaluation: rank r reads items r, r+N, r+2N, ... (no padding, nothing read twice); the tallies are
gathered afterwards so every sample counts exactly once.
"""
from __future__ import annotations

import torch


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    if not shuffle:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


class GlobalBatchSampler:
    """A DataLoader batch_sampler: this rank's slice of every global batch of one epoch.

    set_epoch(epoch, skip) picks the epoch's order and skips the first `skip` global batches (a
    resumed epoch). `total` is the number of global batches in the epoch, len() those still to come."""

    def __init__(self, n: int, batch_size: int, *, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch, self.skip = 1, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def global_batches(self) -> list[list[int]]:
        order = epoch_order(self.n, self.seed, self.epoch, self.shuffle)
        return [order[i:i + self.batch_size] for i in range(0, self.total * self.batch_size, self.batch_size)]

    @property
    def total(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        # a last batch smaller than the process count would leave a process with nothing: dropped
        return full + (1 if rest and rest >= self.world else 0)

    def __len__(self) -> int:
        return max(self.total - self.skip, 0)

    def __iter__(self):
        for batch in self.global_batches()[self.skip:]:
            yield batch[self.rank::self.world]


class ShardSampler:
    """A DataLoader sampler for evaluation: items rank, rank + world, ... in order."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        self.indices = list(range(rank, n, world))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)
