"""UrbanSound8K (`UrbanSound8K/`): audio/fold{1..10}/ and metadata/UrbanSound8K.csv; 10 folds, the
validation split carved from the training folds (slices of one recording, fsID, kept together)."""
from __future__ import annotations

from pathlib import Path

from surgeon.data._common import make_index, read_csv
from surgeon.data.types import DatasetIndex, Item
from surgeon.errors import SurgeonError

COLUMNS = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]


def read_urbansound8k(root: Path) -> DatasetIndex:
    csv_path = root / "metadata" / "UrbanSound8K.csv"
    rows = read_csv(csv_path, COLUMNS)
    names = {}
    for r in rows:
        try:
            class_id = int(r["classID"])
        except ValueError:
            raise SurgeonError(f"{csv_path}: classID {r['classID']!r} is not a number") from None
        if names.setdefault(class_id, r["class"]) != r["class"]:
            raise SurgeonError(f"{csv_path}: classID {class_id} names two classes")
    if sorted(names) != list(range(len(names))):
        raise SurgeonError(f"{csv_path}: classIDs are not 0..{len(names) - 1}: {sorted(names)}")
    items = []
    for r in rows:
        rel = f"audio/fold{int(r['fold'])}/{r['slice_file_name']}"
        items.append(Item(key=rel, label=int(r["classID"]), path=root / rel, group=str(int(r["fold"])),
                          source=f"fs{r['fsID']}"))
    return make_index("urbansound8k", root, [names[i] for i in range(len(names))], items, "kfold",
                      kfold_valid="carve")
