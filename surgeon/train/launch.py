"""`surgeon train --nproc N [--nnodes M --node-rank R --master-addr A --master-port P]`: several
processes through torch's own elastic launcher (what `torchrun` runs).

With one process in all, training runs in this process. Otherwise this process becomes the launcher:
it starts N copies of `surgeon train` with the same arguments (standalone rendezvous on a free port
for one node, static rendezvous at A:P for several), waits for them, and reports. Each worker writes
its error, if any, to a file instead of the terminal, and the launcher prints the first one as the
single line of the failure, so N processes failing alike do not print N lines.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from surgeon.errors import SurgeonError

ERROR_DIR_ENV = "SURGEON_ERROR_DIR"   # set for the workers: where they write their one-line errors
WORKER_ENV = "SURGEON_LAUNCHED"       # set for the workers: keep catching signals until the checkpoint
LAUNCHER_PID_ENV = "SURGEON_LAUNCHER_PID"  # set for the workers: they die with this process
WATCH_INTERVAL_S = 0.5


@dataclass
class Launch:
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None

    @property
    def processes(self) -> int:
        return self.nproc * self.nnodes


def resolve(recipe, **given) -> Launch:
    """The recipe's [launch] with the command line's values over it; checks them."""
    values = recipe.launch.model_dump()
    values.update({k: v for k, v in given.items() if v is not None})
    for key in ("nproc", "nnodes"):
        if values[key] < 1:
            raise SurgeonError(f"--{key.replace('_', '-')}: must be at least 1 (got {values[key]})")
    if not 0 <= values["node_rank"] < values["nnodes"]:
        raise SurgeonError(f"--node-rank: must be in 0..{values['nnodes'] - 1} for {values['nnodes']} nodes "
                           f"(got {values['node_rank']})")
    port = values["master_port"]
    if port is not None and not 1 <= port <= 65535:
        raise SurgeonError(f"--master-port: {port} is not a port number")
    return Launch(**values)


def inside_launcher() -> bool:
    """True in a worker started by this launcher or by torchrun: train in this process."""
    return "WORLD_SIZE" in os.environ


def relaunch(launch: Launch, worker_args: list[str]) -> None:
    """Run `surgeon <worker_args>` in launch.processes processes; returns when all succeeded, raises
    SurgeonError with the first worker's error (and its exit code) otherwise."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    args = ["--nproc-per-node", str(launch.nproc), "--nnodes", str(launch.nnodes)]
    if launch.nnodes == 1:  # what torchrun --standalone does: c10d rendezvous on a free local port
        args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", "--rdzv-id", uuid.uuid4().hex]
    else:
        args += ["--node-rank", str(launch.node_rank), "--master-addr", launch.master_addr,
                 "--master-port", str(launch.master_port or 29500)]
    args += ["--module", "surgeon_cli.main", *worker_args]
    # each worker gets an equal share of the cores (torchrun would print a warning and use 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // launch.nproc)))
    # the agent's own reports ("Received 2 death signal", the failure table) would repeat our one line
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")] + ["torch.distributed"]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="surgeon-launch-") as errors:
        os.environ[ERROR_DIR_ENV] = errors
        os.environ[WORKER_ENV] = "1"
        os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
        try:
            config, cmd, cmd_args = config_from_args(get_args_parser().parse_args(args))
            elastic_launch(config, cmd)(*cmd_args)
        except ChildFailedError as e:
            codes = [f.exitcode for f in e.failures.values()]
            raise _first_error(Path(errors), codes[0] if codes else 1) from None
        except SignalException as e:
            raise _first_error(Path(errors), 128 + int(e.sigval)) from None
        finally:
            os.environ.pop(ERROR_DIR_ENV, None)
            os.environ.pop(WORKER_ENV, None)
            os.environ.pop(LAUNCHER_PID_ENV, None)


def die_with_launcher() -> bool:
    """In a worker of this launcher: a daemon thread that kills this process as soon as the launcher is
    gone (SIGKILLed launchers cannot stop their workers; left running, they would finish the run on their
    own and write under a `--resume` started meanwhile). The launcher is the workers' parent, so its
    death shows as a change of parent pid. False outside a launch."""
    import signal
    import threading

    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if not launcher.isdigit():
        return False
    launcher_pid = int(launcher)

    def watch():
        while os.getppid() == launcher_pid:
            time.sleep(WATCH_INTERVAL_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="surgeon-launcher-watch", daemon=True).start()
    return True


def _first_error(folder: Path, code: int) -> SurgeonError:
    reports = []
    for p in folder.glob("rank*.json"):
        try:
            reports.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    if not reports:
        error = SurgeonError(f"a training process failed with exit code {code} (see its output above)")
    else:
        first = min(reports, key=lambda r: r["time"])  # the cause; the others usually follow from it
        error = SurgeonError(first["message"])
        code = first["code"]
    error.exit_code = code if code > 0 else 1
    return error


def report_worker_error(message: str, code: int) -> bool:
    """In a launched worker, hand the error line to the launcher instead of printing it; False
    outside a launch."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder or not Path(folder).is_dir():
        return False
    rank = os.environ.get("RANK", "0")
    doc = {"message": message, "code": code, "time": time.time(), "rank": int(rank)}
    try:
        Path(folder, f"rank{rank}.json").write_text(json.dumps(doc))
    except OSError:
        return False
    return True


def worker_args(recipe: str, *, set_args: list[str], fold, seed, out: Path, force: bool, resume: str | None,
                as_json: bool = False) -> list[str]:
    """The `surgeon train` command line every worker runs (the launch options left out); with as_json,
    rank 0 prints the one JSON object (the other ranks print no summary)."""
    args = ["train", recipe]
    for s in set_args:
        args += ["--set", s]
    if fold is not None:
        args += ["--fold", str(fold)]
    if seed is not None:
        args += ["--seed", str(seed)]
    args += ["--out", str(Path(out).expanduser().resolve())]
    if force:
        args.append("--force")
    if resume:
        args += ["--resume", resume]
    if as_json:
        args.append("--json")
    return args


def recipe_argument(given: str) -> str:
    """A recipe file as an absolute path (the workers may start elsewhere); a bundled name as it is."""
    p = Path(given).expanduser()
    return str(p.resolve()) if p.is_file() else given

