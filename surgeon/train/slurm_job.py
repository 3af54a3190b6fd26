"""What runs on a Slurm node for one cell (submitit's callable; needs submitit, so slurm.py imports
it only to submit).

On every node of the job, `CellJob(plan)(cell)` runs `surgeon train` for the cell as a subprocess,
with torchrun's options from submitit's JobEnvironment (node rank, number of nodes, first host,
job id). A complete cell output is skipped; an interrupted one is resumed (--resume). On the time
limit or a preemption submitit calls `checkpoint`, which stops the subprocess and hands back the same
callable to requeue: the requeued job then resumes from the cell's last checkpoint.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import submitit

from surgeon.train.slurm import Cell, Plan, cell_state, launch_args, master_port, train_args

STOP_WAIT_S = 60  # the subprocess's time to exit on SIGTERM before it is killed (Slurm warns 90 s ahead)


class CellJob(submitit.helpers.Checkpointable):
    def __init__(self, plan: Plan, force: bool | None = None):
        self.plan = plan
        self.force = plan.force if force is None else force
        self._child = None

    def __getstate__(self):
        return {"plan": self.plan, "force": self.force}  # a running subprocess does not travel

    def __setstate__(self, state):
        self.__dict__.update(state, _child=None)

    def command(self, cell: Cell, env) -> list[str] | None:
        """The `surgeon train` command of this node for `cell`; None when the cell is complete."""
        out = self.plan.cell_out(cell)
        state = cell_state(out)
        if state == "complete" and not self.force:
            return None
        args = train_args(self.plan, cell, resume=state == "partial", force=self.force)
        args += launch_args(self.plan, node_rank=env.node, master_addr=env.hostnames[0],
                            port=master_port(env.raw_job_id))
        return [*self.plan.surgeon, *args]

    def __call__(self, cell: Cell) -> dict:
        env = submitit.JobEnvironment()
        out = self.plan.cell_out(cell)
        argv = self.command(cell, env)
        if argv is None:
            print(f"{cell.name}: {out} is complete; nothing to do", flush=True)
            return {"cell": cell.name, "out": str(out), "status": "complete"}
        print(f"{cell.name}: node {env.node} of {env.num_nodes}: {subprocess.list2cmdline(argv)}", flush=True)
        # Slurm's warning signal is submitit's to handle (checkpoint below), not the trainer's
        child = self._child = subprocess.Popen(argv, cwd=self.plan.cwd, preexec_fn=_ignore_usr2)
        code = child.wait()
        if self._child is not child:  # stop() ended it: submitit requeues this job (it exits meanwhile)
            raise RuntimeError(f"{cell.name}: training stopped to requeue")
        self._child = None
        if code != 0:
            raise RuntimeError(f"{cell.name}: surgeon train exited with status {code} (see this job's log)")
        return {"cell": cell.name, "out": str(out), "status": "trained"}

    def checkpoint(self, cell: Cell) -> submitit.helpers.DelayedSubmission:
        """Requeue: stop the training (its checkpoints stay in the partial directory) and resubmit this
        callable, which resumes from them; --force applied to the first attempt only."""
        self.stop()
        self.force = False
        return submitit.helpers.DelayedSubmission(self, cell)

    def stop(self) -> None:
        """SIGTERM the training (it checkpoints and exits), SIGKILL it after STOP_WAIT_S. This runs in
        submitit's signal handler, possibly while __call__ is inside Popen.wait holding its lock, so it
        reaps the process with os.waitpid, not with Popen's methods."""
        child, self._child = self._child, None
        if child is None or child.returncode is not None:
            return
        try:
            os.kill(child.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_WAIT_S
            while os.waitpid(child.pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(child.pid, signal.SIGKILL)
                    os.waitpid(child.pid, 0)
                    break
                time.sleep(0.2)
        except (ProcessLookupError, ChildProcessError):  # already gone
            pass


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
