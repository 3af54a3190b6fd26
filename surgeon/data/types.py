"""The records every dataset reader produces and every training loop consumes (no torch here)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Item:
    """One labelled clip.

    key    stable id (path relative to the dataset root, or "synthetic/<class>/<n>"): cache keys and
           error messages use it
    label  class index (-1 for transcription-only items)
    path   the audio file; None for synthetic items (generated from key + seed)
    group  the fold / session / official split the item belongs to ("1".."10", "Session3",
           "train"/"valid"/"test"); None when the layout assigns none
    text   transcript (speech recognition, Fluent Speech Commands)
    source the recording the clip was cut from (ESC-50 src_file, UrbanSound8K fsID, a speaker):
           a validation split carved from training data keeps one source on one side
    start, end  the clip's extent in seconds within `path` when it is a segment of a longer
           recording (EPIC-SOUNDS annotations of untrimmed video audio); None: the whole file
    """

    key: str
    label: int
    path: Path | None
    group: str | None
    text: str | None = None
    source: str | None = None
    start: float | None = None
    end: float | None = None


@dataclass
class DatasetIndex:
    name: str  # "esc50", ...
    root: Path | None
    classes: list[str]  # label names, index = label
    items: list[Item]
    protocol: str  # "official" | "kfold" | "leave-one-out" (a recipe may also ask for "kfold-rest")
    missing: list[str] = field(default_factory=list)  # files the metadata lists but that are absent
    # how the validation split is chosen: "previous_fold" (ESC-50 rotation), "carve" (a fraction of
    # the training folds, grouped by source; UrbanSound8K) or "session_partner" (IEMOCAP speaker
    # folds: the other speaker of the test speaker's session, "Ses01F" <-> "Ses01M")
    kfold_valid: str = "carve"
    synthetic: object | None = None  # the SyntheticSource that renders items with path None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def counts(self) -> dict[str, int]:
        """Items per group ("1": 400, ...), sorted by group name (numbers numerically)."""
        c = Counter(item.group for item in self.items)
        return {str(g): c[g] for g in sorted(c, key=group_sort_key)}

    def class_counts(self) -> dict[str, int]:
        c = Counter(item.label for item in self.items)
        return {name: c[i] for i, name in enumerate(self.classes)}


@dataclass
class Split:
    name: str  # "fold1" (test fold 1) / "official" / "Session1"
    train: list[Item]
    valid: list[Item]
    test: list[Item]

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def group_sort_key(group) -> tuple:
    """Numbers in numeric order ("2" before "10"), then text ("Session1"..."Session5")."""
    g = "" if group is None else str(group)
    digits = "".join(ch for ch in g if ch.isdigit())
    return (g.rstrip("0123456789"), int(digits) if digits else -1, g)
