"""`surgeon train RECIPE --launcher slurm`: one Slurm job per cell (fold x seed) of a recipe.

The cells become one job array. Array task i runs, on every node of its allocation,

    surgeon train RECIPE [--set K=V ...] [--fold F] --seed S --out OUT/<cell> [--resume | --force]
                  --nproc G --nnodes M --node-rank R --master-addr HOST --master-port PORT

so each cell writes its own run directory OUT/<cell>/ (results.json, checkpoints, plots). A task
that hits its time limit or is preempted is requeued and resumes from the checkpoints in the cell's
partial directory OUT/.<cell>.surgeon-partial/; a requeued task whose cell is already complete
does nothing. --force replaces existing cell outputs on the first attempt only (a requeue resumes).

Two ways to the same jobs: `submit` goes through submitit (the callable is slurm_job.CellJob), and
`render_sbatch` writes the equivalent standalone sbatch script (what --dry-run prints). Neither
needs submitit nor Slurm to plan; submitting needs both, checked before anything is written.

GPUs: --gpus-per-node G starts G training processes per node (torchrun); 0 asks for no GPU, a
CPU-only job with one process per node.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from surgeon.errors import SurgeonError
from surgeon.train.cells import Cell
from surgeon.train.launch import recipe_argument
from surgeon.train.workdir import partial_dir, resumable

DEFAULT_TIME = "04:00:00"  # short limits are fine: a timed-out task is requeued and resumes
MAX_REQUEUES = 10  # time-limit requeues per task, so a task that never finishes an epoch stops
SIGNAL_DELAY_S = 90  # Slurm warns this long before the time limit (USR2): time to requeue
PORT_BASE, PORT_SPAN = 20000, 20000  # torchrun's master port, derived from the job id
INSTALL_HINT = "--launcher slurm needs submitit: pip install 'surgeon[slurm]' (or pip install submitit)"


@dataclass(frozen=True)
class Resources:
    nodes: int = 1
    gpus_per_node: int = 1
    time_min: int = 240
    partition: str | None = None
    cpus_per_task: int | None = None

    @property
    def nproc(self) -> int:
        """Training processes per node: one per GPU, one on a CPU-only node."""
        return max(self.gpus_per_node, 1)


@dataclass(frozen=True)
class Plan:
    recipe: str  # absolute recipe path, or a bundled recipe name
    recipe_stem: str
    sets: tuple[str, ...]
    cells: tuple[Cell, ...]
    out: Path  # absolute; cell c writes out/<c.name>/
    resources: Resources
    force: bool = False
    cwd: str = field(default_factory=os.getcwd)  # relative --set paths resolve here, as at submission
    surgeon: tuple[str, ...] = (sys.executable, "-m", "surgeon_cli.main")  # how a node runs surgeon

    @property
    def job_name(self) -> str:
        return f"surgeon-{self.recipe_stem}"

    @property
    def logs(self) -> Path:
        return self.out / "slurm"

    @property
    def jobs_file(self) -> Path:
        return self.logs / "jobs.json"

    def cell_out(self, cell: Cell) -> Path:
        return self.out / cell.name


# ----------------------------------------------------------------------------------------- checks

def parse_time(text: str | int) -> int:
    """Slurm time limit in whole minutes: MINUTES, H:MM:SS or D-HH:MM:SS (seconds round up)."""
    s = str(text).strip()
    m = re.fullmatch(r"(\d+)", s)
    if m:
        minutes = int(m.group(1))
    else:
        m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d):(\d\d)", s)
        if not m:
            raise SurgeonError(f"--time: expected MINUTES, H:MM:SS or D-HH:MM:SS, got {s!r}")
        days, hours, mins, secs = (int(g) if g else 0 for g in m.groups())
        if mins > 59 or secs > 59 or (m.group(1) and hours > 23):
            raise SurgeonError(f"--time: {s!r} is not a valid time (minutes and seconds < 60, hours < 24 after D-)")
        minutes = ((days * 24 + hours) * 60 + mins) + (1 if secs else 0)
    if minutes < 1:
        raise SurgeonError(f"--time: must be at least one minute, got {s!r}")
    return minutes


def format_time(minutes: int) -> str:
    """Minutes as Slurm's [D-]HH:MM:SS."""
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def resources(*, nodes: int = 1, gpus_per_node: int = 1, time: str | int = DEFAULT_TIME,
              partition: str | None = None, cpus_per_task: int | None = None) -> Resources:
    if nodes < 1:
        raise SurgeonError(f"--nodes: must be at least 1, got {nodes}")
    if gpus_per_node < 0:
        raise SurgeonError(f"--gpus-per-node: must be 0 (CPU only) or more, got {gpus_per_node}")
    if cpus_per_task is not None and cpus_per_task < 1:
        raise SurgeonError(f"--cpus-per-task: must be at least 1, got {cpus_per_task}")
    if partition is not None and (not partition.strip() or any(c.isspace() for c in partition)):
        raise SurgeonError(f"--partition: expected a partition name, got {partition!r}")
    return Resources(nodes=nodes, gpus_per_node=gpus_per_node, time_min=parse_time(time),
                     partition=partition, cpus_per_task=cpus_per_task)


def require_submitit():
    """The submitit module, or the one-line install hint."""
    try:
        import submitit
    except ImportError:
        raise SurgeonError(INSTALL_HINT) from None
    return submitit


def require_slurm(cluster: str = "slurm") -> None:
    import shutil

    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None] if cluster == "slurm" else []
    if missing:
        raise SurgeonError(f"--launcher slurm: no '{missing[0]}' on PATH; run this on a Slurm login node "
                           "(--dry-run prints the job plan and sbatch script anywhere)")


# ------------------------------------------------------------------------------------------- plan

def make_plan(recipe_arg: str, set_args=(), *, fold: int | None = None, seed: int | None = None, out=None,
              force: bool = False, res: Resources | None = None) -> Plan:
    """The cells of a recipe (optionally one --fold / --seed) and where each writes; refuses existing
    outputs without force (nothing is written here)."""
    from surgeon.io.atomic import check_output
    from surgeon.recipes.load import load_recipe
    from surgeon.train.runs import default_out, load_dataset, plan_cells

    recipe = load_recipe(recipe_arg, list(set_args))
    index = load_dataset(recipe)
    cells = tuple(_cell(recipe, index, c) for c in plan_cells(recipe, index, fold, seed))
    ref = recipe_argument(str(recipe_arg))
    root = Path(out if out is not None else default_out(recipe)).expanduser().resolve()
    plan = Plan(recipe=ref, recipe_stem=Path(str(recipe._source)).stem, sets=tuple(set_args), cells=cells,
                out=root, resources=res or Resources(), force=force)
    check_script_values(plan)
    inputs = [p for p in (recipe.data.root, recipe.model.surgery, recipe._source) if p]
    for target in (plan.jobs_file, *(plan.cell_out(c) for c in cells)):
        check_output(target, force=force, inputs=inputs)
    return plan


def _cell(recipe, index, cell: Cell) -> Cell:
    """The cell with the --fold that makes `surgeon train` run exactly this cell (checked by planning
    that fold: k-fold numbers folds by their name, leave-one-out by position, official has none)."""
    from surgeon.data.types import group_sort_key
    from surgeon.train.runs import plan_cells

    protocol = recipe.data.protocol or index.protocol
    name, split, seed = cell.name, cell.split, cell.seed
    fold = None
    if protocol != "official":
        groups = sorted({it.group for it in index.items}, key=group_sort_key)
        names = [f"fold{g}" if str(g).isdigit() else str(g) for g in groups]
        position = names.index(split.name)
        if protocol == "leave-one-out":
            fold = position + 1
        else:
            digits = "".join(ch for ch in str(groups[position]) if ch.isdigit())
            fold = int(digits) if digits else None
    picked = [c.name for c in plan_cells(recipe, index, fold, seed)] if fold is not None or protocol == "official" else []
    if picked != [name]:
        raise SurgeonError(f"{recipe._source}: cell {name} cannot be selected alone with --fold/--seed, "
                           "so it cannot be one array task")
    return cell.planned(fold)


# --------------------------------------------------------------------------------- one cell's run

def cell_state(out: Path) -> str:
    """'complete' (OUT/results.json), 'partial' (an interrupted run to resume) or 'new'."""
    if (out / "results.json").is_file():
        return "complete"
    return "partial" if resumable(partial_dir(out)) else "new"


def master_port(job_id: str | int) -> int:
    """torchrun's port from the Slurm job id (the digits of it): the same on every node of a job,
    different for jobs sharing a node."""
    digits = "".join(ch for ch in str(job_id) if ch.isdigit())
    return PORT_BASE + int(digits or 0) % PORT_SPAN


def train_args(plan: Plan, cell: Cell, *, resume: bool = False, force: bool = False) -> list[str]:
    """`surgeon train` arguments of one cell, without the torchrun ones (--force wins over --resume)."""
    from surgeon.train.launch import worker_args

    return worker_args(plan.recipe, set_args=plan.sets, fold=cell.fold, seed=cell.seed, out=plan.cell_out(cell),
                       force=force, resume="auto" if resume and not force else None)


def launch_args(plan: Plan, *, node_rank: int, master_addr: str, port: int) -> list[str]:
    """torchrun's options of `surgeon train`: G processes on each of M nodes."""
    r = plan.resources
    return ["--nproc", str(r.nproc), "--nnodes", str(r.nodes), "--node-rank", str(node_rank),
            "--master-addr", master_addr, "--master-port", str(port)]


# ---------------------------------------------------------------------------------------- texts

def describe(plan: Plan, quote=str) -> str:
    """The job plan in words: cells, array size, resources, output layout (values through `quote`:
    shlex.quote in the job script's comments)."""
    r = plan.resources
    n = len(plan.cells)
    q = lambda v: quote(str(v))  # noqa: E731
    gpus = f"{r.gpus_per_node} GPU(s)" if r.gpus_per_node else "no GPU"
    lines = [
        f"job {q(plan.job_name)}: an array of {n} task(s), one per cell of {q(plan.recipe)}",
        *(f"  --set {q(s)}" for s in plan.sets),
        f"resources per task: {r.nodes} node(s) x {gpus}, {r.nproc} training process(es) per node, "
        f"time {format_time(r.time_min)}, partition {q(r.partition) if r.partition else '(cluster default)'}"
        + (f", {r.cpus_per_task} CPUs per task" if r.cpus_per_task else ""),
        f"requeued near the time limit (at most {MAX_REQUEUES} times) or on preemption, resuming "
        "from the cell's last checkpoint; a complete cell is not run again"
        + ("; --force: existing cell outputs are replaced on the first attempt" if plan.force else ""),
        "cells:",
    ]
    for i, c in enumerate(plan.cells):
        fold = f"--fold {c.fold} " if c.fold is not None else ""
        lines.append(f"  [{i}] {q(c.name)}: {fold}--seed {c.seed} -> {q(str(plan.cell_out(c)) + '/')}")
    lines += [
        f"output: {q(str(plan.out) + '/')}<cell>/ (results.json, checkpoints/, plots/); logs and jobs.json in "
        f"{q(str(plan.logs) + '/')}",
    ]
    return "\n".join(lines)


def _control_character(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def check_script_values(plan: Plan) -> None:
    """Refuse control characters (a newline above all) in every path and name that reaches the job
    script: inside an `#SBATCH` line or a comment, a newline starts a line that bash runs."""
    values = {"--out": str(plan.out), "the recipe": plan.recipe, "the working directory": plan.cwd,
              "--partition": plan.resources.partition or "", "the job name": plan.job_name,
              **{f"--set {s}": s for s in plan.sets}, **{f"cell {c.name}": c.name for c in plan.cells},
              **{"the surgeon command": " ".join(plan.surgeon)}}
    for what, value in values.items():
        if _control_character(value):
            raise SurgeonError(f"{what}: {value!r} contains a control character (newline, tab...), which cannot "
                               "go into a job script; rename it")


def render_sbatch(plan: Plan) -> str:
    """A standalone sbatch script equivalent to `submit`: one array task per cell. Every value is
    shell-quoted, in comments too, and none holds a control character (check_script_values)."""
    check_script_values(plan)
    r = plan.resources
    q = shlex.quote
    n = len(plan.cells)
    directives = [f"--job-name={q(plan.job_name)}", f"--array=0-{n - 1}", f"--nodes={r.nodes}",
                  "--ntasks-per-node=1"]
    if r.gpus_per_node:
        directives.append(f"--gpus-per-node={r.gpus_per_node}")
    if r.cpus_per_task:
        directives.append(f"--cpus-per-task={r.cpus_per_task}")
    if r.partition:
        directives.append(f"--partition={q(r.partition)}")
    directives += [f"--time={format_time(r.time_min)}", "--requeue", f"--signal=B:USR2@{SIGNAL_DELAY_S}",
                   "--open-mode=append", f"--output={q(str(plan.logs / '%A_%a.log'))}"]
    words = lambda items: " ".join(q(str(x)) for x in items)  # noqa: E731
    plan_comment = "\n".join(f"# {line}" if line else "#" for line in describe(plan, quote=q).splitlines())
    return f"""#!/bin/bash
{chr(10).join(f"#SBATCH {d}" for d in directives)}

{plan_comment}
#
# Submit with: sbatch THIS_FILE   (the log folder must exist: mkdir -p {q(str(plan.logs))})

set -e
cd {q(plan.cwd)}
SURGEON=({words(plan.surgeon)})
RECIPE={q(plan.recipe)}
SETS=({words(x for s in plan.sets for x in ("--set", s))})
OUT={q(str(plan.out))}
FORCE={1 if plan.force else 0}  # 1: replace an existing cell output, on the first attempt only
NPROC={r.nproc}  # training processes per node
NNODES={r.nodes}
MAX_REQUEUES={MAX_REQUEUES}  # compared with SLURM_RESTART_COUNT, which counts every requeue
CELLS=({words(c.name for c in plan.cells)})
FOLDS=({words("" if c.fold is None else c.fold for c in plan.cells)})
SEEDS=({words(c.seed for c in plan.cells)})

i=${{SLURM_ARRAY_TASK_ID:?submit this script with sbatch}}
cell=${{CELLS[$i]}}
out="$OUT/$cell"
args=(train "$RECIPE" "${{SETS[@]}}")
if [ -n "${{FOLDS[$i]}}" ]; then args+=(--fold "${{FOLDS[$i]}}"); fi
args+=(--seed "${{SEEDS[$i]}}" --out "$out")
if [ "$FORCE" = 1 ] && [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then
    args+=(--force)
elif [ -f "$out/results.json" ]; then
    echo "$cell: $out is complete; nothing to do"
    exit 0
elif [ -f "$OUT/.$cell.surgeon-partial/run.json" ]; then
    args+=(--resume)  # an interrupted attempt left checkpoints: continue from the last one
fi
master=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
port=$(( {PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN} ))
args+=(--nproc "$NPROC" --nnodes "$NNODES" --master-addr "$master" --master-port "$port")

requeue() {{
    if [ "${{SLURM_RESTART_COUNT:-0}}" -lt "$MAX_REQUEUES" ]; then
        echo "$cell: time limit or preemption; requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID"
    else
        echo "$cell: requeued $MAX_REQUEUES times already; not requeueing"
    fi
}}
trap requeue USR2

# one task per node, each with its node rank; in the background so that the USR2 trap runs
srun --ntasks-per-node=1 bash -c 'exec "$@" --node-rank "$SLURM_NODEID"' surgeon "${{SURGEON[@]}}" "${{args[@]}}" &
wait $!
"""


# ------------------------------------------------------------------------------------------ submit

def executor_parameters(plan: Plan, cluster: str) -> dict:
    """submitit.AutoExecutor parameters of the plan's resources."""
    r = plan.resources
    params = dict(name=plan.job_name, timeout_min=r.time_min, nodes=r.nodes, tasks_per_node=1,
                  gpus_per_node=r.gpus_per_node)
    if r.cpus_per_task:
        params["cpus_per_task"] = r.cpus_per_task
    if cluster == "slurm":
        params.update(slurm_array_parallelism=len(plan.cells), slurm_signal_delay_s=SIGNAL_DELAY_S,
                      slurm_additional_parameters={"requeue": True})
        if r.partition:
            params["slurm_partition"] = r.partition
    return params


def submit(plan: Plan, cluster: str = "slurm") -> list[str]:
    """Submit the plan's cells as one job array through submitit; writes OUT/slurm/jobs.json and
    returns the job ids ("<array id>_<task>" on Slurm)."""
    return [str(j.job_id) for j in submit_jobs(plan, cluster)]


def submit_jobs(plan: Plan, cluster: str = "slurm") -> list:
    """`submit`, returning submitit's Job objects (to wait on their results)."""
    from datetime import datetime, timezone

    from surgeon.io.atomic import write_text_atomic

    submitit = require_submitit()
    require_slurm(cluster)
    from surgeon.train.slurm_job import CellJob

    if cluster == "local" and plan.resources.nodes > 1:
        raise SurgeonError("--nodes: the local executor runs on one node")
    kwargs = {"slurm_max_num_timeout": MAX_REQUEUES} if cluster == "slurm" else {}
    executor = submitit.AutoExecutor(folder=plan.logs, cluster=cluster, **kwargs)  # creates the folder
    executor.update_parameters(**executor_parameters(plan, cluster))
    jobs = executor.map_array(CellJob(plan), list(plan.cells))
    ids = [str(j.job_id) for j in jobs]
    doc = {
        "format": "surgeon-slurm/1",
        "cluster": cluster,
        "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "job_name": plan.job_name,
        "recipe": plan.recipe,
        "sets": list(plan.sets),
        "out": str(plan.out),
        "resources": asdict(plan.resources),
        "cells": [{"index": i, **c.describe(), "out": str(plan.cell_out(c)), "job_id": j}
                  for i, (c, j) in enumerate(zip(plan.cells, ids))],
    }
    write_text_atomic(plan.jobs_file, json.dumps(doc, indent=2) + "\n", force=True)  # checked in make_plan
    return jobs


def slurm_train(recipe_arg: str, set_args=(), *, fold: int | None = None, seed: int | None = None, out=None,
                force: bool = False, partition: str | None = None, gpus_per_node: int | None = None,
                nodes: int | None = None, time: str | int | None = None, cpus_per_task: int | None = None,
                dry_run: bool = False, cluster: str = "slurm") -> str:
    """`surgeon train RECIPE --launcher slurm`: the text to print (dry run: the sbatch script, which
    carries the job plan in its comments; otherwise the plan and the submitted job ids). Options left
    None take their defaults: 1 node, 1 GPU per node, DEFAULT_TIME."""
    res = resources(nodes=1 if nodes is None else nodes, gpus_per_node=1 if gpus_per_node is None else gpus_per_node,
                    time=DEFAULT_TIME if time is None else time, partition=partition, cpus_per_task=cpus_per_task)
    if not dry_run:  # before reading the dataset, before writing anything
        require_submitit()
        require_slurm(cluster)
    plan = make_plan(recipe_arg, set_args, fold=fold, seed=seed, out=out, force=force, res=res)
    if dry_run:
        return render_sbatch(plan)
    ids = submit(plan, cluster)
    first = ids[0].split("_")[0] if ids else "-"
    return (f"{describe(plan)}\nsubmitted {len(ids)} job(s): {', '.join(ids)}\n"
            f"job ids written to {plan.jobs_file}; follow with: squeue -j {first}")


def collect(out) -> dict:
    """The per-cell results under OUT (OUT/<cell>/results.json) with their summary (mean, std, n), and
    the cells of OUT/slurm/jobs.json that have no results yet."""
    from surgeon.train.runs import summarize

    root = Path(out)
    cells = []
    for path in sorted(root.glob("*/results.json")):
        cells += json.loads(path.read_text())["cells"]
    jobs = root / "slurm" / "jobs.json"
    planned = [c["name"] for c in json.loads(jobs.read_text())["cells"]] if jobs.is_file() else []
    done = {c["name"] for c in cells}
    return {"cells": cells, "summary": summarize(cells), "missing": [n for n in planned if n not in done]}
