"""Small helpers the dataset readers share (csv rows, required files, the index assembly)."""
from __future__ import annotations

import csv
from pathlib import Path

from surgeon.data.types import DatasetIndex, Item
from surgeon.errors import SurgeonError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")


def need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SurgeonError(f"{path}: {what} not found")
    return path


def read_csv(path: Path, columns: list[str]) -> list[dict]:
    """Rows of a CSV with a header; SurgeonError when a needed column is absent (or empty in a short
    row), or the file is not UTF-8 CSV text."""
    need_file(path, "metadata file")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            absent = [c for c in columns if c not in header]
            if absent:
                raise SurgeonError(f"{path}: missing column(s) {', '.join(absent)}; header is {','.join(header)}")
            for row in reader:
                short = [c for c in columns if row.get(c) is None]
                if short:
                    raise SurgeonError(f"{path}:{reader.line_num}: no value for column {short[0]}")
                rows.append(row)
    except UnicodeDecodeError as e:
        raise SurgeonError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise SurgeonError(f"{path}: not a readable CSV ({e})") from None
    return rows


def check_classes(root: Path | None, classes: list[str], items: list[Item]) -> None:
    """Every class must have at least one item (a class with none cannot be learnt or scored)."""
    have = {item.label for item in items}
    for i, name in enumerate(classes):
        if i not in have:
            raise SurgeonError(f"{root}: class {name!r} has no audio files")


def make_index(name, root, classes, items, protocol, **extra) -> DatasetIndex:
    """The index, with metadata-listed files that do not exist collected in `missing` (the items stay:
    reading them stops the run, or skips them with on_error='skip')."""
    if not items:
        raise SurgeonError(f"{root}: no audio items found for format {name}")
    check_classes(root, classes, items)
    missing = [str(item.path) for item in items if item.path is not None and not item.path.is_file()]
    return DatasetIndex(name=name, root=root, classes=classes, items=items, protocol=protocol,
                        missing=missing, **extra)
