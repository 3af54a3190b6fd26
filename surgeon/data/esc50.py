"""ESC-50 (`ESC-50-master/`): audio/*.wav and meta/esc50.csv, 5 folds rotated as train/valid/test."""
from __future__ import annotations

from pathlib import Path

from surgeon.data._common import make_index, read_csv
from surgeon.data.types import DatasetIndex, Item
from surgeon.errors import SurgeonError

COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def read_esc50(root: Path, *, esc10: bool = False) -> DatasetIndex:
    """esc10=True keeps the ESC-10 subset (rows marked esc10=True), labels renumbered 0..9."""
    csv_path = root / "meta" / "esc50.csv"
    rows = read_csv(csv_path, COLUMNS)
    if esc10:
        rows = [r for r in rows if r["esc10"].strip().lower() == "true"]
    names = {}
    for r in rows:
        try:
            target = int(r["target"])
        except ValueError:
            raise SurgeonError(f"{csv_path}: target {r['target']!r} of {r['filename']} is not a number") from None
        if names.setdefault(target, r["category"]) != r["category"]:
            raise SurgeonError(f"{csv_path}: target {target} names two categories")
    order = sorted(names)  # ESC-10 targets are sparse: renumber in target order
    label_of = {t: i for i, t in enumerate(order)}
    items = [
        Item(key=f"audio/{r['filename']}", label=label_of[int(r["target"])], path=root / "audio" / r["filename"],
             group=str(int(r["fold"])), source=r["src_file"])
        for r in rows
    ]
    return make_index("esc50", root, [names[t] for t in order], items, "kfold", kfold_valid="previous_fold")
