"""Several processes on the CPU (gloo), through `surgeon train --nproc`: the same global batch gives the
same run as one process (within float summation order), evaluation counts every sample once, only
rank 0 writes, and a failure in a worker is one line from the launcher."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from surgeon_cli.main import run as cli

# 3 classes x 30 clips: 54 / 18 / 18 items; 54 = 3 x 16 + 6, so every epoch ends on a short global batch
RECIPE = """
[model]
tiny = "ast"
config = { max_length = 100 }

[method]
name = "lora"
rank = 4

[data]
format = "synthetic"
options = { num_classes = 3, per_class = 30, seconds = 1.0, seed = 4 }
max_frames = 100

[train]
epochs = 3
batch_size = 16
lr = 1e-2
seed = 1

[eval]
batch_size = 5
"""
# float summation order differs between one process and two (gradients are summed across processes):
# losses agree to about 1e-7 on these runs; accuracies and F1 exactly
LOSS_TOLERANCE = 1e-5


def surgeon_subprocess(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SURGEON_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "surgeon_cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def surgeon(*args) -> int:
    with pytest.raises(SystemExit) as e:
        cli(list(args))
    return e.value.code


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    recipe = tmp / "tiny.toml"
    recipe.write_text(RECIPE)
    one = surgeon_subprocess("train", str(recipe), "--out", str(tmp / "one"), cache=tmp / "cache")
    assert one.returncode == 0, one.stderr[-3000:]
    two = surgeon_subprocess("train", str(recipe), "--out", str(tmp / "two"), "--nproc", "2", cache=tmp / "cache")
    assert two.returncode == 0, two.stderr[-3000:]
    return tmp, two


def close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if "loss" in k:
            assert a[k] == pytest.approx(b[k], abs=LOSS_TOLERANCE), k
        else:
            assert a[k] == b[k], k


def test_two_processes_match_one_with_the_same_global_batch(runs):
    tmp, _ = runs
    one = json.loads((tmp / "one" / "results.json").read_text())
    two = json.loads((tmp / "two" / "results.json").read_text())
    assert (one["processes"], two["processes"]) == (1, 2)
    [c1], [c2] = one["cells"], two["cells"]
    assert c1["counts"] == c2["counts"] == {"train": 54, "valid": 18, "test": 18}
    assert c1["best_epoch"] == c2["best_epoch"]
    close(c1["valid"], c2["valid"])
    close(c1["test"], c2["test"])
    epochs = [[json.loads(l) for l in (tmp / run / "metrics.jsonl").read_text().splitlines()] for run in ("one", "two")]
    steps = [[e for e in run if e["event"] == "step"] for run in epochs]
    assert len(steps[0]) == len(steps[1]) == 3 * 4  # 4 global batches per epoch, not 4 per process
    for a, b in zip(*[[e for e in run if e["event"] == "epoch"] for run in epochs]):
        close({k: v for k, v in a.items() if k.startswith(("train_", "valid_"))},
              {k: v for k, v in b.items() if k.startswith(("train_", "valid_"))})


def test_evaluation_counts_every_sample_once(runs):
    tmp, _ = runs
    doc = json.loads((tmp / "two" / "results.json").read_text())
    # 18 test clips in batches of 5 over 2 processes (9 each: 5 + 4): the confusion matrix behind the
    # accuracy has 18 entries, so accuracy is a multiple of 1/18
    acc = doc["cells"][0]["test"]["accuracy"]
    assert round(acc * 18, 6) == round(acc * 18)
    experts_or_none = doc["cells"][0]["experts"]
    assert experts_or_none is None  # LoRA has no experts; Soft-MoA's recorder is merged (test_train_units)


def test_only_rank_zero_writes(runs):
    tmp, two = runs
    names = sorted(p.name for p in tmp.iterdir())
    assert names == ["cache", "one", "tiny.toml", "two"]  # no work directory left, no second run
    assert two.stdout.count("run written to") == 1
    assert "Traceback" not in two.stderr


def test_a_failing_worker_is_one_line(tmp_path):
    import numpy as np
    import soundfile as sf

    root = tmp_path / "sounds"
    for c, label in enumerate(["a", "b"]):
        (root / label).mkdir(parents=True)
        for i in range(12):
            t = np.arange(16000) / 16000
            sf.write(root / label / f"{i}.wav", np.sin(2 * np.pi * (300 + 200 * c + i) * t).astype("float32"), 16000)
    (root / "a" / "3.wav").write_bytes(b"not a wav file at all")
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.replace('format = "synthetic"', f'format = "folder"\nroot = "{root}"')
                      .replace("options = { num_classes = 3, per_class = 30, seconds = 1.0, seed = 4 }\n", "")
                      .replace("epochs = 3", "epochs = 1"))
    done = surgeon_subprocess("train", str(recipe), "--out", str(tmp_path / "run"), "--nproc", "2",
                              cache=tmp_path / "cache")
    assert done.returncode == 2
    errors = [l for l in done.stderr.splitlines() if "error" in l.lower()]
    assert len(errors) == 1 and errors[0].startswith("surgeon: error: ") and "3.wav" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.surgeon-partial").exists()


@pytest.mark.parametrize("args, message", [
    (["--nproc", "0"], "--nproc: must be at least 1"),
    (["--nnodes", "2", "--node-rank", "2"], "--node-rank: must be in 0..1"),
    (["--nproc", "2", "--resume"], "no interrupted run"),
    (["--partition", "gpu"], "add --launcher slurm"),
    (["--launcher", "pbs"], "--launcher: expected"),
])
def test_launch_bad_input(tmp_path, capsys, args, message):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    assert surgeon("train", str(recipe), "--out", str(tmp_path / "run"), *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_launch_settings_come_from_the_recipe_and_the_command_line_wins(tmp_path):
    from surgeon.recipes.load import load_recipe
    from surgeon.train import launch

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE + '\n[launch]\nnproc = 4\nnnodes = 2\nnode_rank = 1\nmaster_addr = "node0"\n')
    r = load_recipe(str(recipe), [])
    plan = launch.resolve(r)
    assert (plan.nproc, plan.nnodes, plan.node_rank, plan.master_addr, plan.processes) == (4, 2, 1, "node0", 8)
    plan = launch.resolve(r, nproc=1, nnodes=1, node_rank=0)
    assert plan.processes == 1  # one process in all: trains in this process, no launcher
    args = launch.worker_args(str(recipe), set_args=["train.lr=1e-3"], fold=2, seed=None, out=tmp_path / "o",
                              force=True, resume="auto")
    assert args == ["train", str(recipe), "--set", "train.lr=1e-3", "--fold", "2", "--out", str(tmp_path / "o"),
                    "--force", "--resume", "auto"]
    with_json = launch.worker_args(str(recipe), set_args=[], fold=None, seed=None, out=tmp_path / "o", force=False,
                                   resume=None, as_json=True)
    assert with_json[-1] == "--json"  # rank 0 prints the one JSON object of `train --json --nproc N`


def test_the_launcher_reports_the_first_worker_error(tmp_path, monkeypatch):
    from surgeon.train import launch

    monkeypatch.setenv(launch.ERROR_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    assert launch.report_worker_error("data: a.wav: cannot decode", 2)
    monkeypatch.setenv("RANK", "0")
    assert launch.report_worker_error("internal error: RuntimeError: connection closed by peer", 1)
    error = launch._first_error(tmp_path, 1)
    assert str(error) == "data: a.wav: cannot decode" and error.exit_code == 2
    empty = tmp_path / "none"
    empty.mkdir()
    error = launch._first_error(empty, -9)  # killed by a signal before it could say anything
    assert "exit code -9" in str(error) and error.exit_code == 1
