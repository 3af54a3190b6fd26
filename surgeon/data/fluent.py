"""Fluent Speech Commands (`fluent_speech_commands_dataset/`): data/{train,valid,test}_data.csv; the
class is the intent (action, object, location), 31 of them; transcripts kept as `text`."""
from __future__ import annotations

from pathlib import Path

from surgeon.data._common import make_index, read_csv
from surgeon.data.types import DatasetIndex, Item

COLUMNS = ["path", "speakerId", "transcription", "action", "object", "location"]
SPLITS = {"train": "train_data.csv", "valid": "valid_data.csv", "test": "test_data.csv"}


def intent_name(row: dict) -> str:
    return f"{row['action']}|{row['object']}|{row['location']}"


def read_fluent(root: Path) -> DatasetIndex:
    rows = {split: read_csv(root / "data" / name, COLUMNS) for split, name in SPLITS.items()}
    classes = sorted({intent_name(r) for part in rows.values() for r in part})
    label_of = {name: i for i, name in enumerate(classes)}
    items = [
        Item(key=r["path"], label=label_of[intent_name(r)], path=root / r["path"], group=split,
             text=r["transcription"], source=r["speakerId"])
        for split, part in rows.items()
        for r in part
    ]
    return make_index("fluent", root, classes, items, "official")
