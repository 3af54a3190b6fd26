"""Progress output: a rich progress bar in a terminal, plain log lines otherwise (CI, files, pipes).
Only rank 0 of a distributed run reports."""
from __future__ import annotations

import sys
import time


class Reporter:
    def __init__(self, enabled: bool = True, rich: bool | None = None, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.rich = self.stream.isatty() if rich is None else rich
        self._progress = None
        self._task = None
        self._last = 0.0

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def start(self, cell: str, epoch: int, epochs: int, steps: int) -> None:
        if not self.enabled:
            return
        label = f"{cell} epoch {epoch}/{epochs}"
        if self.rich:
            if self._progress is None:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                          TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                                          console=Console(file=self.stream), transient=True)
                self._progress.start()
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(label, total=steps, loss="-")
        self._label = label

    def step(self, done: int, steps: int, loss: float) -> None:
        if not self.enabled:
            return
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, loss=f"{loss:.4f}")
        elif time.monotonic() - self._last > 30:  # plain logs: a line every 30 s at most
            self._last = time.monotonic()
            self.message(f"{self._label} step {done}/{steps} loss {loss:.4f}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
