"""The dataset formats by name: `load_index("esc50", root)` reads a layout into a DatasetIndex.

Each reader is a function (root, **options) -> DatasetIndex in its own module. Adding a format means
adding a reader and one line here. Readers import nothing heavy: `surgeon validate` lists a dataset
without torch.
"""
from __future__ import annotations

import inspect
from importlib import import_module
from pathlib import Path

from surgeon.data.types import DatasetIndex
from surgeon.errors import SurgeonError
from surgeon.errors import did_you_mean as _did_you_mean

# data.format -> (module, reader function), imported when the format is used; the transcribed-speech
# readers (LJ Speech, VCTK, path,text manifests) live with the speech task, which imports the data layer
DATASETS = {
    "esc50": ("surgeon.data.esc50", "read_esc50"),
    "urbansound8k": ("surgeon.data.urbansound8k", "read_urbansound8k"),
    "speechcommands": ("surgeon.data.speechcommands", "read_speechcommands"),
    "fluent": ("surgeon.data.fluent", "read_fluent"),
    "iemocap": ("surgeon.data.iemocap", "read_iemocap"),
    "epicsounds": ("surgeon.data.epicsounds", "read_epic_sounds"),
    "manifest": ("surgeon.data.manifest", "read_manifest"),
    "folder": ("surgeon.data.folder", "read_folder"),
    "synthetic": ("surgeon.data.synthetic", "read_synthetic"),
    "ljspeech": ("surgeon.speech.datasets", "read_ljspeech"),
    "vctk": ("surgeon.speech.datasets", "read_vctk"),
    "transcripts": ("surgeon.speech.datasets", "read_transcripts"),
}
NEEDS_ROOT = {name for name in DATASETS if name != "synthetic"}
# formats whose data.root may be the CSV file itself rather than a folder holding it (docs/data.md)
FILE_ROOT = {"manifest", "transcripts"}


def reader(format: str):
    """The reader function of a format."""
    module, name = DATASETS[format]
    return getattr(import_module(module), name)


def did_you_mean(word: str, choices) -> str:
    # dataset names are short: a looser match than the default still finds "esc-50" -> "esc50"
    return _did_you_mean(word, choices, cutoff=0.5)


def reader_options(format: str) -> list[str]:
    """The options a reader accepts (keyword-only parameters)."""
    params = inspect.signature(reader(format)).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _check_type(format: str, name: str, value) -> None:
    """An option takes the type of its default: true/false for booleans (never the string "false")."""
    default = inspect.signature(reader(format)).parameters[name].default
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return
    if not ok:
        raise SurgeonError(f"data.options.{name}: expected {want}, got {value!r}")


def load_index(format: str, root: Path | str | None, **options) -> DatasetIndex:
    """Read a dataset layout. Unknown format or option, missing root: SurgeonError."""
    if format not in DATASETS:
        raise SurgeonError(
            f"data.format: unknown format {format!r}{did_you_mean(format, DATASETS)}; known: {', '.join(DATASETS)}"
        )
    known = reader_options(format)
    for name, value in options.items():
        if name not in known:
            raise SurgeonError(
                f"data.options.{name}: not an option of the {format} reader{did_you_mean(name, known)}; "
                f"its options: {', '.join(known) or 'none'}"
            )
        _check_type(format, name, value)
    if format in NEEDS_ROOT:
        if root is None or str(root) == "":
            raise SurgeonError(f"data.root: the {format} format needs the dataset root")
        root = Path(root).expanduser()
        if not root.exists():
            raise SurgeonError(f"{root}: dataset root not found (data.root for format {format})")
    elif root is not None and str(root) != "":
        raise SurgeonError(f"data.root: the {format} format generates its data and takes no root")
    return reader(format)(root, **options)
