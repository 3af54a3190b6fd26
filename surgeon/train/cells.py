"""A cell: one split of the dataset (official, fold3, Session2) trained with one seed.

The same record serves the training (runs.plan_cells fills in the split and its training items) and
the Slurm plan (slurm.make_plan fills in the --fold that selects the cell alone and drops the data,
so the cell travels to a node small and picklable).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Cell:
    name: str  # fold3-seed0, official-seed0, Session2-seed1
    fold: int | None  # the --fold that selects this cell's split alone (Slurm plans); None: the official split
    seed: int
    split: object = field(default=None, compare=False, repr=False)  # surgeon.data.types.Split
    train: list | None = field(default=None, compare=False, repr=False)  # training items (a few-shot subset)

    def planned(self, fold: int | None) -> "Cell":
        """The cell as a job plan holds it: its --fold, no data."""
        return replace(self, fold=fold, split=None, train=None)

    def describe(self) -> dict:
        return {"name": self.name, "fold": self.fold, "seed": self.seed}
