"""Outputs appear whole or not at all.

Everything surgeon writes goes to a hidden temporary path beside the target and is renamed into place
when complete, so a run that fails or is killed midway leaves no half-written output (an existing one
stays intact). An existing output is replaced only with force, and an output may never be, contain, or
sit inside one of the inputs.
"""
from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from surgeon.errors import SurgeonError

TMP_MARK = ".surgeon-tmp-"


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output(out: str | os.PathLike, *, force: bool, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an output that exists (without force) or that overlaps an input; returns the resolved path."""
    out = Path(out).expanduser().resolve()
    for given in inputs:
        if given is None:
            continue
        inp = Path(given).expanduser().resolve()
        if _overlaps(out, inp):
            raise SurgeonError(f"{out}: the output would overwrite the input {inp}; choose another --out")
    if out.exists() and not force:
        raise SurgeonError(f"{out} exists; pass --force to replace it")
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def atomic_output(
    out: str | os.PathLike, *, force: bool = False, inputs: Iterable[str | os.PathLike] = (), directory: bool = True
) -> Iterator[Path]:
    """Yield a temporary path to write into; on success it replaces `out` in one rename.

    With directory=True the temporary path is an empty directory, else a file path not yet created."""
    out = check_output(out, force=force, inputs=inputs)
    tmp = out.parent / f".{out.name}{TMP_MARK}{uuid.uuid4().hex[:8]}"
    try:  # a bad --out (under a file, in a read-only folder) is the user's to fix: exit 2, not a traceback
        out.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp.mkdir()
    except OSError as e:
        raise SurgeonError(f"{out}: cannot write the output here: {e.strerror or e}") from None
    try:
        yield tmp
        if out.exists():
            if not force:  # appeared while we worked
                raise SurgeonError(f"{out} exists; pass --force to replace it")
            if directory or out.is_dir():
                old = out.parent / f".{out.name}{TMP_MARK}old-{uuid.uuid4().hex[:8]}"
                os.rename(out, old)
                os.rename(tmp, out)
                _remove(old)
            else:
                os.replace(tmp, out)
        else:
            os.rename(tmp, out)
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, *, force: bool = False, inputs=()) -> Path:
    with atomic_output(path, force=force, inputs=inputs, directory=False) as tmp:
        tmp.write_text(text)
    return Path(path)
