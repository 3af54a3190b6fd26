"""SIGINT and SIGTERM during training: finish the optimiser step, write a checkpoint, exit.

The handler only raises a flag; the training loop looks at it between steps (all processes agree on
it, see loop.fit) and ends the run with `Interrupted`. A second signal of the same kind is not
caught, so pressing Ctrl-C twice still stops a run that is stuck; except in a worker of
`surgeon train --nproc`, where the launcher passes the terminal's signal on a second time (and
kills the worker itself if it takes too long).
"""
from __future__ import annotations

import signal
import threading

from surgeon.errors import SurgeonError

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(SurgeonError):
    """The run stopped on a signal after writing a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = EXIT_CODES.get(signum, 1)


class StopRequest:
    """Context manager: while active, SIGINT/SIGTERM set `signum` instead of ending the process."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        import os

        self.signum = signum
        if not os.environ.get("SURGEON_LAUNCHED"):
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # the next one is not caught

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for s in EXIT_CODES:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


def ignore_interrupts_in_worker(_worker_id: int) -> None:
    """DataLoader worker_init_fn: Ctrl-C reaches the whole process group; the main process handles it,
    so a worker must not die of it halfway through a batch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
