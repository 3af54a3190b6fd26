"""Speech Commands v2 (`speech_commands_v0.02/`): one folder per word (35 words), the official split
from validation_list.txt and testing_list.txt, every other clip training; `_background_noise_` and
any folder starting with "_" are not classes."""
from __future__ import annotations

from pathlib import Path

from surgeon.data._common import make_index, need_file
from surgeon.data.types import DatasetIndex, Item


def _list(path: Path) -> set[str]:
    need_file(path, "split list")
    return {line.strip().replace("\\", "/") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def read_speechcommands(root: Path) -> DatasetIndex:
    valid, test = _list(root / "validation_list.txt"), _list(root / "testing_list.txt")
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    items = []
    for label, word in enumerate(words):
        for wav in sorted((root / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            group = "test" if rel in test else "valid" if rel in valid else "train"
            items.append(Item(key=rel, label=label, path=wav, group=group, source=wav.name.split("_nohash_")[0]))
    # clips the lists name that are not on disk: reported, and they fail when read
    listed = {rel for rel in valid | test if rel.split("/")[0] in words}
    present = {item.key for item in items}
    label_of = {w: i for i, w in enumerate(words)}
    for rel in sorted(listed - present):
        items.append(Item(key=rel, label=label_of[rel.split("/")[0]], path=root / rel,
                          group="test" if rel in test else "valid", source=Path(rel).name.split("_nohash_")[0]))
    return make_index("speechcommands", root, words, items, "official")
