"""One writer per output: an OS file lock (flock) held for the writer's life.

The lock file `.NAME.surgeon-lock` sits beside the output and holds the owner's pid and command line;
the owner removes it when done. The kernel drops the lock when its process dies, however it dies, so a
killed run never leaves a lock that blocks the next one (only its few bytes, reused by the next owner).
A file removed between another process's open and its flock is detected (the inode changed) and the
lock taken again on the new file.
"""
from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from surgeon.errors import SurgeonError

LOCK_MARK = ".surgeon-lock"


def lock_path(out: Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}{LOCK_MARK}"


class OutputLock:
    """Exclusive lock on writing `out`; raises SurgeonError naming the running writer when taken."""

    def __init__(self, out: Path, what: str = "output"):
        self.out, self.path, self.fd = Path(out), lock_path(out), None
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._refuse(fd, what)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its owner removed the file after we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{' '.join(sys.argv)[:1000]}\n".encode(), 0)
        self.fd = fd

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SurgeonError(f"{self.out}: cannot write here: {e.strerror or e}") from None

    def _refuse(self, fd: int, what: str):
        owner = os.pread(fd, 4096, 0).decode(errors="replace").split("\n", 1)
        os.close(fd)
        pid = owner[0].strip() or "?"
        command = " ".join(owner[1].split()) if len(owner) > 1 else ""
        raise SurgeonError(f"{self.out}: another surgeon process (pid {pid}{': ' + command if command else ''}) is "
                           f"writing this {what}; wait for it to finish or stop it first")

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink(missing_ok=True)  # while still holding the lock
            except OSError:
                pass
            finally:
                os.close(self.fd)  # closing drops the flock
                self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.release()
