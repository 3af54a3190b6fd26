"""A folder per class: root/<label>/*.wav (also flac, ogg, aiff). Test and validation are carved."""
from __future__ import annotations

from pathlib import Path

from surgeon.data._common import AUDIO_SUFFIXES, make_index
from surgeon.data.types import DatasetIndex, Item
from surgeon.errors import SurgeonError


def read_folder(root: Path) -> DatasetIndex:
    if not root.is_dir():
        raise SurgeonError(f"{root}: the folder format needs a directory with one sub-folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not classes:
        raise SurgeonError(f"{root}: no class folders")
    items = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise SurgeonError(f"{root / name}: class {name!r} has no audio files")
        items += [Item(key=p.relative_to(root).as_posix(), label=label, path=p, group=None) for p in files]
    return make_index("folder", root, classes, items, "official")
