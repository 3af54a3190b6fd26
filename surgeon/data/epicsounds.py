"""EPIC-SOUNDS (`EPIC-SOUNDS/`): the official annotation CSVs over the untrimmed audio of the
EPIC-KITCHENS-100 videos; 44 classes (paper 004, Tables 1-3).

Layout (docs/data.md): `EPIC_Sounds_train.csv` and `EPIC_Sounds_validation.csv` in the root (or in
an `epic-sounds-annotations/` clone there), and each video's audio, extracted from the video, as
`<audio_dir>/<video_id>.wav` or `<audio_dir>/<participant_id>/<video_id>.wav` (flac, ... too). An
item is one annotated segment: its start and stop timestamps cut it from the video's audio when it
is read.

Labels: `class_id` (0-43) names `class`; classes are numbered in class_id order. The recognition test
split's labels are withheld (`EPIC_Sounds_recognition_test_timestamps.csv` has timestamps only, for
the challenge server), so the labelled validation CSV is the test set here, as the papers report on
it, and the validation split is carved from the training CSV, whole videos at a time (segments of a
video overlap in time and sound alike: a video never sits on both sides).
"""
from __future__ import annotations

import re
from pathlib import Path

from surgeon.data._common import AUDIO_SUFFIXES, make_index, read_csv
from surgeon.data.types import DatasetIndex, Item
from surgeon.errors import SurgeonError

FILES = {"train": "EPIC_Sounds_train.csv", "test": "EPIC_Sounds_validation.csv"}  # group -> official CSV
COLUMNS = ["annotation_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp", "class", "class_id"]
ANNOTATIONS_CLONE = "epic-sounds-annotations"
_TIMESTAMP = re.compile(r"^(\d+):([0-5]?\d):([0-5]?\d(?:\.\d+)?)$")  # HH:mm:ss.SSS


def seconds(value: str, where: str) -> float:
    m = _TIMESTAMP.match(value.strip())
    if not m:
        raise SurgeonError(f"{where}: timestamp {value!r} is not HH:mm:ss.SSS")
    hours, minutes, secs = m.groups()
    return 3600 * int(hours) + 60 * int(minutes) + float(secs)


def annotations_dir(root: Path) -> Path:
    """The folder holding the CSVs: the root itself, or the annotation repository cloned into it."""
    if not (root / FILES["train"]).is_file() and (root / ANNOTATIONS_CLONE / FILES["train"]).is_file():
        return root / ANNOTATIONS_CLONE
    return root


def video_files(audio: Path) -> dict[str, Path]:
    """video id -> its audio file, from <audio>/<video>.<ext> and <audio>/<participant>/<video>.<ext>."""
    found = {}
    for pattern in ("*", "*/*"):
        for path in sorted(audio.glob(pattern)):
            if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
    return found


def read_epic_sounds(root: Path, *, audio_dir: str = "audio") -> DatasetIndex:
    """audio_dir: the folder (relative to the root, or absolute) with the videos' extracted audio."""
    where = annotations_dir(root)
    audio = Path(audio_dir).expanduser()
    audio = audio if audio.is_absolute() else root / audio
    files = video_files(audio) if audio.is_dir() else {}
    rows = {group: (where / name, read_csv(where / name, COLUMNS)) for group, name in FILES.items()}
    names: dict[int, str] = {}
    for csv_path, part in rows.values():
        for n, r in enumerate(part, start=2):
            try:
                class_id = int(r["class_id"])
            except ValueError:
                raise SurgeonError(f"{csv_path}:{n}: class_id {r['class_id']!r} is not a number") from None
            if names.setdefault(class_id, r["class"]) != r["class"]:
                raise SurgeonError(f"{csv_path}:{n}: class_id {class_id} names two classes "
                                   f"({names[class_id]!r} and {r['class']!r})")
    order = sorted(names)
    label_of = {c: i for i, c in enumerate(order)}
    items = []
    for group, (csv_path, part) in rows.items():
        split = FILES[group].removeprefix("EPIC_Sounds_").removesuffix(".csv")
        for n, r in enumerate(part, start=2):
            start = seconds(r["start_timestamp"], f"{csv_path}:{n}")
            end = seconds(r["stop_timestamp"], f"{csv_path}:{n}")
            if end < start:
                raise SurgeonError(f"{csv_path}:{n}: {r['annotation_id']} stops ({r['stop_timestamp']}) before it "
                                   f"starts ({r['start_timestamp']})")
            video = r["video_id"]
            path = files.get(video, audio / f"{video}.wav")  # absent: listed in index.missing
            items.append(Item(key=f"{split}/{r['annotation_id']}", label=label_of[int(r["class_id"])], path=path,
                              group=group, source=video, start=start, end=end))
    return make_index("epicsounds", root, [names[c] for c in order], items, "official")
