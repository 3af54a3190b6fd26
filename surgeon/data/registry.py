"""The dataset formats by name: `load_index("esc50", root)` reads a layout into a DatasetIndex.

Each reader is a function (root, **options) -> DatasetIndex in its own module. Adding a format means
adding a reader and one line here. Readers import nothing heavy: `surgeon validate` lists a dataset
without torch.
"""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path

from surgeon.data.epicsounds import read_epic_sounds
from surgeon.data.esc50 import read_esc50
from surgeon.data.fluent import read_fluent
from surgeon.data.folder import read_folder
from surgeon.data.iemocap import read_iemocap
from surgeon.data.manifest import read_manifest
from surgeon.data.speechcommands import read_speechcommands
from surgeon.data.synthetic import read_synthetic
from surgeon.data.types import DatasetIndex
from surgeon.data.urbansound8k import read_urbansound8k
from surgeon.errors import SurgeonError
from surgeon.errors import did_you_mean as _did_you_mean
# transcribed-speech readers (LJ Speech, VCTK, path,text manifests) live with the speech task
from surgeon.speech.datasets import READERS as SPEECH_READERS

DATASETS = {
    "esc50": read_esc50,
    "urbansound8k": read_urbansound8k,
    "speechcommands": read_speechcommands,
    "fluent": read_fluent,
    "iemocap": read_iemocap,
    "epicsounds": read_epic_sounds,
    "manifest": read_manifest,
    "folder": read_folder,
    "synthetic": read_synthetic,
}

DATASETS.update(SPEECH_READERS)
NEEDS_ROOT = {name for name in DATASETS if name != "synthetic"}


def did_you_mean(word: str, choices) -> str:
    # dataset names are short: a looser match than the default still finds "esc-50" -> "esc50"
    return _did_you_mean(word, choices, cutoff=0.5)


def reader_options(format: str) -> list[str]:
    """The options a reader accepts (keyword-only parameters)."""
    params = inspect.signature(DATASETS[format]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _check_type(format: str, name: str, value) -> None:
    """An option takes the type of its default: true/false for booleans (never the string "false")."""
    default = inspect.signature(DATASETS[format]).parameters[name].default
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
    return DATASETS[format](root, **options)
