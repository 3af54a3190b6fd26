"""Copy byte ranges of input files into an output file inside the kernel, beside the writer's own work.

Untouched tensors are most of a merge's bytes. `copy_range` copies a range with os.copy_file_range
(file to file in the kernel, never through Python; the call `cp` itself uses, and measured as fast as
`os.sendfile`) to an explicit output offset, so ranges need not arrive in file order. Where the kernel
refuses (EXDEV: another filesystem on an old kernel; ENOSYS; EINVAL or EOPNOTSUPP: a filesystem
without it; EPERM: a sandbox that filters the call) the rest of the range goes through one buffer
with pread/pwrite; any other error (a full disk, EIO) is raised.

`Copier` runs the copies on one thread: the syscall releases the GIL, so the kernel copies untouched
tensors while the main thread computes and writes the merged ones, and a merge takes about the longer
of the two rather than their sum.
"""
from __future__ import annotations

import errno
import os
import queue
import threading

from surgeon.errors import SurgeonError

FALLBACK_ERRNOS = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM})
CHUNK = 1 << 24  # of the user-space fallback
MAX_CALL = 1 << 30  # bytes per copy_file_range call, so that a cancelled copy stops soon


def pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def copy_range(file, begin: int, nbytes: int, dst_fd: int, dst_offset: int, kernel: bool = True) -> bool:
    """Copy `nbytes` of `file` from offset `begin` to `dst_fd` at `dst_offset`. Returns whether the
    kernel copy is usable (False once refused: the caller need not ask again for this output)."""
    with open(file, "rb", buffering=0) as f:
        src, done = f.fileno(), 0
        if kernel and hasattr(os, "copy_file_range"):
            try:
                while done < nbytes:
                    n = os.copy_file_range(src, dst_fd, min(nbytes - done, MAX_CALL), begin + done, dst_offset + done)
                    if n == 0:
                        raise SurgeonError(f"{file}: truncated at byte {begin + done}")
                    done += n
                return True
            except OSError as e:
                if e.errno not in FALLBACK_ERRNOS:
                    raise
        buf = memoryview(bytearray(min(CHUNK, nbytes - done)))
        while done < nbytes:
            n = os.preadv(src, [buf[:min(buf.nbytes, nbytes - done)]], begin + done)
            if n == 0:
                raise SurgeonError(f"{file}: truncated at byte {begin + done}")
            pwrite_all(dst_fd, buf[:n], dst_offset + done)
            done += n
    return False


class Copier:
    """copy_range jobs on one background thread, started with the first job. The first error stops
    the rest and is raised by the next `submit` or by `join`."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._cancelled = False
        self._kernel = True

    def submit(self, file, begin: int, nbytes: int, dst_fd: int, dst_offset: int) -> None:
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="surgeon-copy", daemon=True)
            self._thread.start()
        self._jobs.put((file, begin, nbytes, dst_fd, dst_offset))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None and not self._cancelled:
                try:
                    self._kernel = copy_range(*job, kernel=self._kernel)
                except BaseException as e:  # noqa: BLE001 (re-raised in the writer's thread)
                    self._error = e

    def _stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def join(self) -> None:
        """Wait for every submitted copy; raise the first error."""
        self._stop()
        self._raise()

    def cancel(self) -> None:
        """Drop the copies not yet started and wait for the one running (the output is abandoned)."""
        self._cancelled = True
        self._stop()
        self._error = None
