"""`surgeon train RECIPE --launcher slurm` (surgeon/train/slurm.py): the job plan, the equivalent sbatch
script (run under bash with stand-ins for srun, scontrol and surgeon), submission through submitit
(a stand-in sbatch; the local executor for a real training), and the requeue logic of the job."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surgeon.data.miniature import make_miniature
from surgeon.errors import SurgeonError
from surgeon.train import slurm
from surgeon.train.slurm import cell_state, make_plan, parse_time, partial_dir, render_sbatch, slurm_train


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    return make_miniature("esc50", tmp_path_factory.mktemp("esc") / "ESC-50-master")


@pytest.fixture
def fakes(tmp_path):
    """A folder of stand-ins for Slurm's commands, and a `surgeon` that records its arguments."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = tmp_path / "calls.jsonl"
    scripts = {
        # srun: drop its own options, run the command as node 0
        "srun": '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nSLURM_NODEID=${SLURM_NODEID:-0} exec "$@"\n',
        "scontrol": ('#!/bin/bash\nif [ "$1" = show ]; then echo nodeA; echo nodeB; '
                     f'else echo "$@" >> {tmp_path}/scontrol.log; fi\n'),
        "sbatch": f'#!/bin/bash\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n',
    }
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    recorder = tmp_path / "record.py"
    recorder.write_text(
        "import json, os, sys, time\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'pid': os.getpid()}) + '\\n')\n"
        "time.sleep(float(os.environ.get('FAKE_TRAIN_SECONDS', '0')))\n")
    return {"bin": folder, "record": record, "surgeon": (sys.executable, str(recorder)), "tmp": tmp_path}


def calls(fakes) -> list[dict]:
    path = fakes["record"]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_script(script: Path, fakes, task: int, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PATH": f"{fakes['bin']}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": str(task),
               "SLURM_JOB_ID": "123457", "SLURM_JOB_NODELIST": "nodeA,nodeB", **env}
    return subprocess.run(["bash", str(script)], env=environ, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------------------- plan

def test_dry_run_script_names_recipe_array_and_resources(esc50, tmp_path):
    out = tmp_path / "runs"
    text = slurm_train("ast-lora-esc50", [f"data.root={esc50}"], out=str(out), partition="gpu", gpus_per_node=4,
                       nodes=2, time="1-02:30:00", cpus_per_task=16, dry_run=True)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--job-name=surgeon-ast-lora-esc50", "--array=0-4", "--nodes=2", "--ntasks-per-node=1",
                      "--gpus-per-node=4", "--cpus-per-task=16", "--partition=gpu", "--time=1-02:30:00",
                      "--requeue", "--signal=B:USR2@90", f"--output={out}/slurm/%A_%a.log"):
        assert f"#SBATCH {directive}" in lines, directive
    assert "RECIPE=ast-lora-esc50" in lines and "an array of 5 task(s)" in text
    assert "CELLS=(fold1-seed0 fold2-seed0 fold3-seed0 fold4-seed0 fold5-seed0)" in lines
    assert "FOLDS=(1 2 3 4 5)" in lines and "SEEDS=(0 0 0 0 0)" in lines
    assert "NPROC=4  # training processes per node" in lines and "NNODES=2" in lines
    assert not out.exists()  # a dry run writes nothing
    script = tmp_path / "job.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


@pytest.mark.parametrize("fmt, recipe, sets, expected", [
    ("synthetic", "quickstart", [], [("official-seed0", None, 0)]),
    ("esc50", "fewshot-ast-lora-esc50", ["data.few_shot.k=1"],
     [(f"fold{f}-seed{s}", f, s) for f in range(1, 6) for s in range(3)]),
    ("iemocap", "w2v2-bottleneck-iemocap", [], None),  # leave-one-out over speakers: --fold is the position
])
def test_every_array_task_selects_exactly_its_cell(fmt, recipe, sets, expected, tmp_path):
    from surgeon.recipes.load import load_recipe
    from surgeon.train.runs import load_dataset, plan_cells

    root = make_miniature(fmt, tmp_path / fmt)
    sets = sets + ([f"data.root={root}"] if root else [])
    plan = make_plan(recipe, sets, out=tmp_path / "o")
    r = load_recipe(recipe, sets)
    index = load_dataset(r)
    everything = [c.name for c in plan_cells(r, index)]
    assert [c.name for c in plan.cells] == everything
    if expected is not None:
        assert [(c.name, c.fold, c.seed) for c in plan.cells] == expected
    for c in plan.cells:  # what `surgeon train --fold F --seed S` runs: this cell and no other
        assert [x.name for x in plan_cells(r, index, c.fold, c.seed)] == [c.name]


def test_fold_and_seed_restrict_the_array(esc50, tmp_path):
    plan = make_plan("fewshot-ast-lora-esc50", [f"data.root={esc50}", "data.few_shot.k=1"], fold=2, out=tmp_path)
    assert [c.name for c in plan.cells] == ["fold2-seed0", "fold2-seed1", "fold2-seed2"]
    plan = make_plan("fewshot-ast-lora-esc50", [f"data.root={esc50}", "data.few_shot.k=1"], seed=1, out=tmp_path)
    assert [c.name for c in plan.cells] == [f"fold{f}-seed1" for f in range(1, 6)]
    assert "--array=0-4" in render_sbatch(plan)


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30:00", 90), ("01:30:00", 90), ("0:00:30", 1),
                                           ("1-00:00:00", 1440), ("2-03:04:05", 2 * 1440 + 3 * 60 + 5),
                                           (45, 45)])
def test_time_limits(text, minutes):
    assert parse_time(text) == minutes
    assert parse_time(slurm.format_time(minutes)) == minutes


@pytest.mark.parametrize("text", ["0", "", "1h", "1:60:00", "1:00:60", "1:5:00", "1-24:00:00", "-5", "1.5",
                                  "1-2", "12:00"])
def test_bad_time_is_one_line(text, esc50, tmp_path):
    with pytest.raises(SurgeonError, match="^--time: "):
        slurm_train("ast-lora-esc50", [f"data.root={esc50}"], out=str(tmp_path / "o"), time=text, dry_run=True)


@pytest.mark.parametrize("option, kwargs", [("--nodes", {"nodes": 0}), ("--gpus-per-node", {"gpus_per_node": -1}),
                                            ("--cpus-per-task", {"cpus_per_task": 0}),
                                            ("--partition", {"partition": "a b"})])
def test_bad_resources_are_one_line(option, kwargs, tmp_path):
    with pytest.raises(SurgeonError, match=f"^{option}: "):
        slurm_train("quickstart", [], out=str(tmp_path / "o"), dry_run=True, **kwargs)
    assert not (tmp_path / "o").exists()


def test_cpu_only_job_runs_one_process_per_node(tmp_path):
    text = slurm_train("quickstart", [], out=str(tmp_path / "o"), gpus_per_node=0, dry_run=True)
    assert "--gpus-per-node" not in text and "NPROC=1  # training processes per node" in text


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "o"
    (out / "official-seed0").mkdir(parents=True)
    with pytest.raises(SurgeonError, match="exists; pass --force"):
        slurm_train("quickstart", [], out=str(out), dry_run=True)
    assert "FORCE=1" in slurm_train("quickstart", [], out=str(out), force=True, dry_run=True)


def test_without_submitit_one_line_and_dry_run_still_works(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    with pytest.raises(SurgeonError, match=r"needs submitit: pip install"):
        slurm_train("quickstart", [], out=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
    assert "#SBATCH --array=0-0" in slurm_train("quickstart", [], out=str(tmp_path / "o"), dry_run=True)


def test_without_slurm_one_line(monkeypatch, tmp_path):
    pytest.importorskip("submitit")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SurgeonError, match="no 'sbatch' on PATH"):
        slurm_train("quickstart", [], out=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_cli_dry_run_and_bad_time(tmp_path, capsys):
    from surgeon_cli.main import run as cli

    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:
        cli(["train", "quickstart", "--launcher", "slurm", "--dry-run", "--partition", "gpu", "--time", "90",
             "--gpus-per-node", "2", "--out", str(out)])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for line in ("RECIPE=quickstart", "#SBATCH --array=0-0", "#SBATCH --partition=gpu", "#SBATCH --time=01:30:00",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --nodes=1"):
        assert line in text.splitlines(), line
    with pytest.raises(SystemExit) as e:
        cli(["train", "quickstart", "--launcher", "slurm", "--dry-run", "--time", "1:75:00", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--time" in err
    assert not out.exists()


# ------------------------------------------------------------------------------ the sbatch script

def odd_plan(esc50, tmp_path, fakes, **kwargs):
    """A plan with a space, a quote and a dollar sign in its paths and overrides."""
    out = tmp_path / "it's a $HOME run"
    plan = make_plan("ast-lora-esc50", [f"data.root={esc50}", 'train.lr=1e-3', 'output.plots=false',
                                        'data.options = {}'], out=out, **kwargs)
    return dataclasses.replace(plan, surgeon=fakes["surgeon"], resources=slurm.resources(gpus_per_node=2))


def test_script_runs_each_cells_command(esc50, tmp_path, fakes):
    plan = odd_plan(esc50, tmp_path, fakes)
    script = tmp_path / "job.sh"
    script.write_text(render_sbatch(plan))
    for task in (0, 3):
        done = run_script(script, fakes, task)
        assert done.returncode == 0, done.stderr
    port = 20000 + 123457 % 20000
    got = calls(fakes)
    for call, cell in zip(got, (plan.cells[0], plan.cells[3])):
        assert call["argv"] == [*slurm.train_args(plan, cell),
                                "--nproc", "2", "--nnodes", "1", "--master-addr", "nodeA", "--master-port", str(port),
                                "--node-rank", "0"]
        assert call["cwd"] == plan.cwd
    assert got[1]["argv"][:2] == ["train", "ast-lora-esc50"]
    assert "--set" in got[1]["argv"] and "data.options = {}" in got[1]["argv"]
    assert got[1]["argv"][got[1]["argv"].index("--out") + 1] == str(plan.out / "fold4-seed0")


def test_script_skips_complete_resumes_partial_and_forces_first_attempt_only(esc50, tmp_path, fakes):
    plan = odd_plan(esc50, tmp_path, fakes)
    script = tmp_path / "job.sh"
    script.write_text(render_sbatch(plan))
    complete, partial = plan.cell_out(plan.cells[0]), plan.cell_out(plan.cells[1])
    complete.mkdir(parents=True)
    (complete / "results.json").write_text("{}")
    partial_dir(partial).mkdir()
    (partial_dir(partial) / "run.json").write_text("{}")  # what makes a work directory resumable
    assert cell_state(complete) == "complete" and cell_state(partial) == "partial"
    done = run_script(script, fakes, 0)
    assert done.returncode == 0 and "is complete; nothing to do" in done.stdout and not calls(fakes)
    assert run_script(script, fakes, 1).returncode == 0
    assert "--resume" in calls(fakes)[-1]["argv"] and "--force" not in calls(fakes)[-1]["argv"]

    forced = tmp_path / "forced.sh"
    forced.write_text(render_sbatch(dataclasses.replace(plan, force=True)))
    assert run_script(forced, fakes, 0).returncode == 0  # first attempt: replace the complete output
    assert "--force" in calls(fakes)[-1]["argv"] and "--resume" not in calls(fakes)[-1]["argv"]
    before = len(calls(fakes))
    assert run_script(forced, fakes, 0, SLURM_RESTART_COUNT="1").returncode == 0  # a requeue: nothing to redo
    assert len(calls(fakes)) == before
    assert run_script(forced, fakes, 1, SLURM_RESTART_COUNT="2").returncode == 0  # a requeue resumes
    assert "--resume" in calls(fakes)[-1]["argv"] and "--force" not in calls(fakes)[-1]["argv"]


def test_script_requeues_itself_on_the_warning_signal(esc50, tmp_path, fakes):
    plan = odd_plan(esc50, tmp_path, fakes)
    script = tmp_path / "job.sh"
    script.write_text(render_sbatch(plan))
    env = {**os.environ, "PATH": f"{fakes['bin']}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "2",
           "SLURM_JOB_ID": "555", "SLURM_JOB_NODELIST": "nodeA", "FAKE_TRAIN_SECONDS": "20"}
    log = tmp_path / "job.log"
    with open(log, "w") as stdout:
        job = subprocess.Popen(["bash", str(script)], env=env, stdout=stdout)
    try:
        deadline = time.monotonic() + 30
        while not calls(fakes) and time.monotonic() < deadline:  # training started
            time.sleep(0.1)
        assert calls(fakes)
        job.send_signal(signal.SIGUSR2)  # what Slurm sends 90 s before the time limit (--signal=B:USR2@90)
        job.wait(timeout=10)  # the trap requeues at once, without waiting for the training
        out = log.read_text()
    finally:
        job.kill()
        for call in calls(fakes):  # the stand-in trainer this test started
            try:
                os.kill(call["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert "requeueing job 555" in out
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "555"]


# ---------------------------------------------------------------------------------- the submitit job

class FakeEnv:
    node, num_nodes, hostnames, raw_job_id = 1, 2, ["gpu17", "gpu18"], "777_3"


def test_job_command_skip_resume_force(esc50, tmp_path, fakes):
    pytest.importorskip("submitit")
    from surgeon.train.slurm_job import CellJob

    plan = odd_plan(esc50, tmp_path, fakes)
    cell = plan.cells[2]
    job = CellJob(plan)
    launch = ["--nproc", "2", "--nnodes", "1", "--node-rank", "1", "--master-addr", "gpu17",
              "--master-port", str(20000 + 7773 % 20000)]
    assert job.command(cell, FakeEnv()) == [*plan.surgeon, *slurm.train_args(plan, cell), *launch]
    partial_dir(plan.cell_out(cell)).mkdir(parents=True)
    (partial_dir(plan.cell_out(cell)) / "run.json").write_text("{}")
    assert job.command(cell, FakeEnv())[-len(launch) - 2:-len(launch)] == ["--resume", "auto"]
    plan.cell_out(cell).mkdir()
    (plan.cell_out(cell) / "results.json").write_text("{}")
    assert job.command(cell, FakeEnv()) is None  # a requeued job whose cell had finished
    forced = CellJob(dataclasses.replace(plan, force=True))
    assert "--force" in forced.command(cell, FakeEnv()) and "--resume" not in forced.command(cell, FakeEnv())


def test_job_checkpoint_requeues_the_same_callable(esc50, tmp_path, fakes):
    pytest.importorskip("submitit")
    import pickle

    from submitit.helpers import DelayedSubmission

    from surgeon.train.slurm_job import CellJob

    plan = dataclasses.replace(odd_plan(esc50, tmp_path, fakes), force=True)
    cell = plan.cells[0]
    job = CellJob(plan)
    job._child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # a running training
    child = job._child
    again = job.checkpoint(cell)
    assert isinstance(again, DelayedSubmission)
    assert again.function is job and again.args == (cell,) and again.kwargs == {}
    with pytest.raises(ChildProcessError):  # stopped and reaped; its checkpoints stay for the requeue
        os.waitpid(child.pid, os.WNOHANG)
    assert job.force is False  # --force was for the first attempt: the requeued one resumes
    copy = pickle.loads(pickle.dumps(again.function))
    assert copy.plan == plan and copy.force is False and copy._child is None


def test_submit_through_submitit_writes_the_array_and_jobs_json(esc50, tmp_path, fakes, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", f"{fakes['bin']}:{os.environ['PATH']}")
    out = tmp_path / "runs"
    text = slurm_train("ast-lora-esc50", [f"data.root={esc50}"], out=str(out), partition="gpu", gpus_per_node=4,
                       nodes=2, time="90")
    assert "submitted 5 job(s): 4242_0, 4242_1, 4242_2, 4242_3, 4242_4" in text
    lines = (fakes["tmp"] / "submitted.sh").read_text().splitlines()
    for directive in ("--array=0-4%5", "--partition=gpu", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4",
                      "--time=90", "--requeue", "--signal=USR2@90", "--job-name=surgeon-ast-lora-esc50"):
        assert f"#SBATCH {directive}" in lines, directive
    doc = json.loads((out / "slurm" / "jobs.json").read_text())
    assert [(c["name"], c["fold"], c["seed"], c["job_id"]) for c in doc["cells"]] == [
        (f"fold{i + 1}-seed0", i + 1, 0, f"4242_{i}") for i in range(5)]
    assert doc["recipe"] == "ast-lora-esc50" and doc["resources"]["partition"] == "gpu"
    with pytest.raises(SurgeonError, match="jobs.json exists; pass --force"):
        slurm_train("ast-lora-esc50", [f"data.root={esc50}"], out=str(out))


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if entry.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the job's process in /proc")
def test_local_executor_trains_is_requeued_resumes_and_skips_when_complete(tmp_path):
    """One array task really trains through `surgeon train`, pickled and run by submitit's local executor;
    the warning signal mid-training stops it, requeues it (the local executor reruns the checkpointed
    callable) and the rerun resumes from the checkpoint; a job of the finished cell does nothing."""
    pytest.importorskip("submitit")
    # 36 steps: the signal must land while training runs; with 6 steps, a quiet machine (CI) once finished the
    # remaining steps between the first checkpoint and the signal, and the rerun found the cell complete
    sets = ["train.epochs=3", "train.batch_size=2", "data.options.per_class=10", "method.num_experts=2",
            "output.plots=false", "checkpoint.every_steps=1"]
    plan = make_plan("quickstart", sets, out=tmp_path / "runs", res=slurm.resources(gpus_per_node=0))
    out = plan.cell_out(plan.cells[0])
    (job,) = slurm.submit_jobs(plan, cluster="local")
    deadline = time.monotonic() + 120
    while not list(partial_dir(out).glob("resume/*/ckpt-*")):  # training, with a checkpoint to resume from
        assert time.monotonic() < deadline and not job.done(), job.stderr()
        time.sleep(0.01)
    (task,) = _children(job._process.pid)  # the process running CellJob (Slurm signals every task)
    os.kill(task, signal.SIGUSR2)
    assert job.result() == {"cell": "official-seed0", "out": str(out), "status": "trained"}
    commands = [line for line in job.stdout().splitlines() if " train quickstart " in line]
    assert len(commands) == 2 and "--resume" not in commands[0] and "--resume" in commands[1]
    assert "--nproc 1 --nnodes 1 --node-rank 0" in commands[1]
    doc = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in doc["cells"]] == ["official-seed0"] and not partial_dir(out).exists()
    (again,) = slurm.submit_jobs(plan, cluster="local")  # e.g. requeued after it had finished
    assert again.result()["status"] == "complete"
    collected = slurm.collect(plan.out)
    assert collected["missing"] == [] and collected["summary"]["test_accuracy"]["n"] == 1
