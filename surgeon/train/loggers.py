"""Where training metrics go: metrics.jsonl always, TensorBoard and CSV when the recipe asks.

    [log]
    to = ["jsonl", "tensorboard", "csv"]

Every logger receives the same dict that metrics.jsonl gets, one per event (a "step" line per
optimiser step, an "epoch" line per epoch, a "cell" line per finished cell, a "stop" line when a
cell stops early), so a value some other code adds to a line (Learnable-MAM's lams, the experts'
shares) reaches every logger without further work. How a logger shows a value follows its type:
a number is a scalar, a table is a group of values (`lr/method`), and a list of numbers is a
distribution over its positions (a histogram per layer of the experts' shares in TensorBoard; CSV
leaves lists out).

metrics.jsonl is the record the others follow: a resumed run cuts it back to its checkpoint (its
length is stored there), and the other loggers are then written afresh from what it holds, so
after a resume they show exactly what an uninterrupted run shows.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from surgeon.errors import SurgeonError

TENSORBOARD_HINT = "log.to: tensorboard needs the tensorboard package: pip install 'surgeon[tensorboard]'"
IDENTIFIERS = ("event", "cell", "epoch", "step")  # name a line's place; not metrics


def check_loggers(recipe) -> None:
    """The recipe's loggers can be made here (before any work)."""
    if "tensorboard" in recipe.log.to:
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise SurgeonError(TENSORBOARD_HINT) from None


def flatten(line: dict, prefix: str = "") -> dict[str, object]:
    """{"lr": {"method": 1e-3}, "loss": 0.5} -> {"lr/method": 1e-3, "loss": 0.5}; lists of numbers
    are kept whole, everything else that is not a number is left out."""
    out: dict[str, object] = {}
    for key, value in line.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, (int, float)):
            out[name] = value
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            out[name] = value
    return out


class JsonlLog:
    """metrics.jsonl: appended to line by line; tell() is its length, which checkpoints store."""

    def __init__(self, path: Path, truncate_to: int | None = None):
        self.file = open(path, "r+b" if path.exists() else "w+b")
        self.file.truncate(truncate_to if truncate_to is not None else 0)
        self.file.seek(0, 2)

    def lines(self) -> list[dict]:
        self.file.seek(0)
        text = self.file.read().decode()
        self.file.seek(0, 2)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def write(self, line: dict) -> None:
        self.file.write((json.dumps(line) + "\n").encode())
        self.file.flush()

    def tell(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.close()


class TensorBoardLog:
    """<run>/tensorboard/<cell>/: one TensorBoard run per cell. Steps are plotted against the
    optimiser step (step/loss, step/lr/<group>), epochs against the epoch (epoch/valid_accuracy,
    epoch/lam/<layer>, the experts' shares as histograms), the cell's test metrics at its selected epoch."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._writer_class = SummaryWriter
        self.folder = folder
        shutil.rmtree(folder, ignore_errors=True)  # written afresh from metrics.jsonl (see the module's note)
        self.writers: dict[str, object] = {}

    def _writer(self, cell: str):
        if cell not in self.writers:
            self.writers[cell] = self._writer_class(log_dir=str(self.folder / cell), flush_secs=30)
        return self.writers[cell]

    def write(self, line: dict) -> None:
        event, cell = line.get("event"), line.get("cell")
        if cell is None or event not in ("step", "epoch", "cell"):
            return
        w = self._writer(str(cell))
        step = {"step": line.get("step"), "epoch": line.get("epoch"), "cell": line.get("best_epoch")}[event] or 0
        group = {"step": "step", "epoch": "epoch", "cell": "test"}[event]
        values = flatten({k: v for k, v in line.items() if k not in IDENTIFIERS and k != "best_epoch"})
        for name, value in values.items():
            if event == "cell":
                name = name.removeprefix("test_")
            if isinstance(value, list):
                _histogram(w, f"{group}/{name}", value, step)
            else:
                w.add_scalar(f"{group}/{name}", value, step)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()


def _histogram(writer, tag: str, weights: list, step: int) -> None:
    """A list of weights as a histogram over its positions (bucket i holds weights[i])."""
    n = len(weights)
    total = float(sum(weights))
    writer.add_histogram_raw(tag, min=0, max=n - 1, num=total, sum=float(sum(i * w for i, w in enumerate(weights))),
                             sum_squares=float(sum(i * i * w for i, w in enumerate(weights))),
                             bucket_limits=[i + 0.5 for i in range(n)], bucket_counts=[float(w) for w in weights],
                             global_step=step)


class CsvLog:
    """<run>/metrics-<event>.csv (metrics-step.csv, metrics-epoch.csv, metrics-cell.csv): one row per
    line, one column per value; a line with a new value rewrites its file with the wider header."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.tables: dict[str, tuple[list[str], list[dict]]] = {}
        for old in folder.glob("metrics-*.csv"):
            old.unlink()

    def write(self, line: dict) -> None:
        event = str(line.get("event", "other"))
        row = {k: line[k] for k in IDENTIFIERS[1:] if k in line}
        row.update({k: v for k, v in flatten(line).items() if not isinstance(v, list)})
        for k in ("reason", "best_epoch"):
            if k in line:
                row[k] = line[k]
        columns, rows = self.tables.setdefault(event, ([], []))
        rows.append(row)
        path = self.folder / f"metrics-{event}.csv"
        new = [k for k in row if k not in columns]
        if new or len(rows) == 1:
            columns.extend(new)
            with open(path, "w", newline="") as f:
                out = csv.DictWriter(f, columns)
                out.writeheader()
                out.writerows(rows)
        else:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, columns).writerow(row)

    def close(self) -> None:
        pass


class RunLog:
    """The loggers of a run in progress (rank 0 only; the other processes pass folder=None and log
    nothing). Called with a metrics dict; tell() is metrics.jsonl's length."""

    def __init__(self, folder: Path | None, to=("jsonl",), truncate_to: int | None = None):
        self.jsonl = None
        self.others: list = []
        if folder is None:
            return
        self.jsonl = JsonlLog(folder / "metrics.jsonl", truncate_to)
        if "tensorboard" in to:
            self.others.append(TensorBoardLog(folder / "tensorboard"))
        if "csv" in to:
            self.others.append(CsvLog(folder))
        if self.others:
            for line in self.jsonl.lines():  # a resumed run: what the checkpoint had logged
                for logger in self.others:
                    logger.write(line)

    def __call__(self, line: dict) -> None:
        if self.jsonl is None:
            return
        self.jsonl.write(line)
        for logger in self.others:
            logger.write(line)

    def tell(self) -> int:
        return self.jsonl.tell() if self.jsonl is not None else 0

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        for logger in self.others:
            logger.close()
