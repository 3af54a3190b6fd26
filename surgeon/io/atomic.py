"""Outputs appear whole or not at all.

Everything surgeon writes goes to a hidden temporary path beside the target, named with the writer's
pid (`.NAME.surgeon-tmp-PID-XXXXXXXX`), and is renamed into place when complete, so a run that fails or
is killed midway leaves no half-written output (an existing one stays intact); the temporary paths of
writers that died (killed with SIGKILL, a power cut) are removed by the next write to the same output.

An existing output is replaced only with force, in one step where the system allows: the new output is
written beside the old one and the two are swapped with renameat2(RENAME_EXCHANGE) (Linux 3.15+, on
ext4, xfs, btrfs, tmpfs...), so a reader sees the old output or the new one, whole, never a mix or
nothing. Where the exchange is unavailable (another OS, a filesystem without it) the old output is
renamed aside and the new one renamed in: a reader in between finds no output for that moment, and a
kill in between leaves the old output in `.NAME.surgeon-tmp-PID-old-*` (restored by the next write).

Refused outputs: one that overlaps an input (is, contains or sits inside it, after resolving symlinks,
including those of the input's files: a Hugging Face snapshot links to the cache's blobs), and paths
whose replacement would destroy more than the output: empty, the current directory or a parent of
it, the home directory or a parent of it, the filesystem root.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from surgeon.errors import SurgeonError

TMP_MARK = ".surgeon-tmp-"
_TMP_PID = re.compile(re.escape(TMP_MARK) + r"(\d+)-")
# errors of the place being written, not of surgeon: one line naming the path, exit 2
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EIO}


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def input_paths(given: str | os.PathLike) -> set[Path]:
    """An input's resolved path and, for a directory, the real paths of the files in it (symlinks
    followed: the blobs of a Hugging Face snapshot, shards outside the folder)."""
    path = Path(given).expanduser()
    found = {path.resolve()}
    if path.is_dir():
        try:
            entries = list(path.iterdir())
        except OSError:
            entries = []
        for entry in entries:
            if entry.is_symlink() or entry.is_file():
                found.add(entry.resolve())
    return found


def _dangerous(raw: str, out: Path) -> str | None:
    """Why replacing `out` would destroy more than an output, or None."""
    if not raw.strip():
        return "the output path is empty"
    cwd = Path.cwd().resolve()
    home = Path.home().expanduser().resolve()
    if out == Path(out.anchor):
        return "it is the filesystem root"
    if out == cwd or out in cwd.parents:
        return "it is the current directory or one of its parents"
    if out == home or out in home.parents:
        return "it is the home directory or one of its parents"
    return None


def check_output(out: str | os.PathLike, *, force: bool, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an output that exists (without force), overlaps an input or would replace a directory
    that holds more than it (see the module's docstring); returns the resolved path."""
    raw = os.fspath(out)
    resolved = Path(raw).expanduser().resolve()
    why = _dangerous(raw, resolved)
    if why:
        raise SurgeonError(f"--out {raw!r}: refusing to write there: {why}; name a new directory or file")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise SurgeonError(f"--out {raw!r}: the path contains a control character (newline, tab...)")
    for given in inputs:
        if given is None:
            continue
        for inp in input_paths(given):
            if _overlaps(resolved, inp):
                raise SurgeonError(f"{resolved}: the output would overwrite the input {inp}; choose another --out")
    if resolved.exists() and not force:
        raise SurgeonError(f"{resolved} exists; pass --force to replace it")
    return resolved


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def temp_path(out: Path, tag: str = "") -> Path:
    """A hidden path beside `out` owned by this process: `.NAME.surgeon-tmp-PID-[TAG-]XXXXXXXX`."""
    return out.parent / f".{out.name}{TMP_MARK}{os.getpid()}-{tag + '-' if tag else ''}{uuid.uuid4().hex[:8]}"


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove the temporary paths of `out` left by writers that are no longer running. A dead writer's
    old output (its `-old-` path) goes back into place when `out` itself is missing."""
    removed = []
    prefix = f".{out.name}{TMP_MARK}"
    try:
        entries = [p for p in out.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for p in entries:
        m = _TMP_PID.match(p.name[len(out.name) + 1:])
        if not m or pid_alive(int(m.group(1))):
            continue
        if "-old-" in p.name and not out.exists() and not out.is_symlink():
            try:
                os.rename(p, out)  # killed between the two renames of a swap: the old output comes back
                continue
            except OSError:
                pass
        _remove(p)
        removed.append(p)
    return removed


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (renameat2 RENAME_EXCHANGE); False where unavailable."""
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (OSError, AttributeError):
            _renameat2 = False
    if not _renameat2:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_path(new: Path, out: Path) -> None:
    """Put `new` at `out`; an existing `out` is swapped out in one step where possible, then removed."""
    if not (out.exists() or out.is_symlink()):
        os.rename(new, out)
        return
    if not (new.is_dir() or out.is_dir()):
        os.replace(new, out)  # a file over a file: rename(2) replaces in one step
        return
    if exchange(new, out):  # `new` now holds the old output, under this process's temporary name
        _remove(new)
        return
    old = temp_path(out, "old")
    os.rename(out, old)
    os.rename(new, out)
    _remove(old)


def write_error(out: Path, e: OSError) -> SurgeonError:
    where = e.filename or out
    return SurgeonError(f"{out}: cannot write the output: {e.strerror or e} ({where})")


@contextmanager
def atomic_output(
    out: str | os.PathLike, *, force: bool = False, inputs: Iterable[str | os.PathLike] = (), directory: bool = True
) -> Iterator[Path]:
    """Yield a temporary path to write into; on success it replaces `out` in one rename.

    With directory=True the temporary path is an empty directory, else a file path not yet created."""
    out = check_output(out, force=force, inputs=inputs)
    try:  # a bad --out (under a file, in a read-only folder) is the user's to fix: exit 2, not a traceback
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        tmp = temp_path(out)
        if directory:
            tmp.mkdir()
    except OSError as e:
        raise SurgeonError(f"{out}: cannot write the output here: {e.strerror or e}") from None
    try:
        yield tmp
        if (out.exists() or out.is_symlink()) and not force:  # appeared while we worked
            raise SurgeonError(f"{out} exists; pass --force to replace it")
        replace_path(tmp, out)
    except OSError as e:
        _remove(tmp)
        if e.errno in WRITE_ERRNOS:
            raise write_error(out, e) from None
        raise
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, *, force: bool = False, inputs=()) -> Path:
    with atomic_output(path, force=force, inputs=inputs, directory=False) as tmp:
        tmp.write_text(text)
    return Path(path)
