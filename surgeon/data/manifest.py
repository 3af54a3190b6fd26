"""A generic CSV manifest: a header with at least `path,label` (paths relative to the CSV), optional
`split` (train/valid/test; validation/val/dev also mean valid) and `fold`. With folds the protocol
is k-fold; with a split column the official split; with neither, test and validation are carved."""
from __future__ import annotations

from pathlib import Path

from surgeon.data._common import make_index, read_csv
from surgeon.data.types import DatasetIndex, Item
from surgeon.errors import SurgeonError

SPLIT_NAMES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid", "val": "valid",
               "dev": "valid", "test": "test", "testing": "test", "eval": "test"}


def read_manifest(root: Path, *, classes: list[str] | None = None) -> DatasetIndex:
    """root: the CSV file (or a folder holding manifest.csv). classes: the label order (default sorted)."""
    csv_path = root / "manifest.csv" if root.is_dir() else root
    rows = read_csv(csv_path, ["path", "label"])
    header = set(rows[0]) if rows else set()
    has_split, has_fold = "split" in header, "fold" in header
    labels = sorted({r["label"] for r in rows})
    if classes is not None:
        unknown = [label for label in labels if label not in classes]
        if unknown:
            raise SurgeonError(f"{csv_path}: label {unknown[0]!r} is not in data.classes")
        labels = list(classes)
    label_of = {name: i for i, name in enumerate(labels)}
    base = csv_path.parent
    items = []
    for n, r in enumerate(rows, start=2):
        group = None
        if has_fold and r["fold"].strip():
            group = r["fold"].strip()
        elif has_split and r["split"].strip():
            group = SPLIT_NAMES.get(r["split"].strip().lower())
            if group is None:
                raise SurgeonError(f"{csv_path}:{n}: split {r['split']!r} is not train, valid or test")
        path = Path(r["path"])
        items.append(Item(key=r["path"], label=label_of[r["label"]], path=path if path.is_absolute() else base / path,
                          group=group, source=r.get("source") or None))
    protocol = "kfold" if has_fold else "official"
    return make_index("manifest", csv_path, labels, items, protocol, kfold_valid="carve")
