"""The recipes shipped with surgeon (the `surgeon_recipes` package, i.e. the repository's recipes/)."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from surgeon.errors import SurgeonError

PACKAGE = "surgeon_recipes"


def _root():
    return resources.files(PACKAGE)


def names() -> list[str]:
    """Bundled recipe names (file stems), sorted."""
    return sorted(p.name[:-5] for p in _root().iterdir() if p.name.endswith(".toml"))


def bundled_path(name: str) -> Path | None:
    """Path of a bundled recipe by name (with or without .toml); None when there is none."""
    stem = name[:-5] if name.endswith(".toml") else name
    if "/" in stem or os.sep in stem:
        return None
    entry = _root() / f"{stem}.toml"
    return Path(str(entry)) if entry.is_file() else None


def describe(name: str) -> str:
    """The recipe's first comment line (its one-line description)."""
    path = bundled_path(name)
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line:
            break
    return ""


def copy(name: str, dest: str | os.PathLike, force: bool = False) -> Path:
    """Copy a bundled recipe to `dest` (a file, or a folder to copy into)."""
    from surgeon.io.atomic import write_text_atomic
    from surgeon.errors import did_you_mean

    src = bundled_path(name)
    if src is None:
        raise SurgeonError(f"{name}: no bundled recipe of that name{did_you_mean(name, names())}; see 'surgeon recipes ls'")
    dest = Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / src.name
    write_text_atomic(dest, src.read_text(), force=force)
    return dest
