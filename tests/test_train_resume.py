"""Resume after any crash: a run killed with SIGKILL and resumed ends bit for bit like an uninterrupted
one (CPU); SIGTERM writes a checkpoint first; a NaN loss stops the run naming the last good
checkpoint; --resume with nothing to resume, with another recipe or with another model is one line."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from surgeon_cli.main import run as cli

RECIPE = """
[model]
tiny = "ast"
config = {{ max_length = 100, hidden_dropout_prob = 0.1 }}

[method]
name = "bottleneck"
reduction = 8

[data]
format = "synthetic"
options = {{ num_classes = 3, per_class = 40, seconds = 1.0, seed = 1 }}
max_frames = 100
specaugment = {{ freq_mask = 8, time_mask = 20 }}

[train]
epochs = {epochs}
batch_size = 8
lr = 5e-3
seed = 3

[checkpoint]
every_steps = {every}
keep = 2
"""


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [l for l in err.splitlines() if l.startswith("surgeon:")]  # the rest is progress


def surgeon(*args) -> int:
    with pytest.raises(SystemExit) as e:
        cli(list(args))
    return e.value.code


def write_recipe(folder: Path, epochs: int = 3, every: int = 2, name: str = "tiny.toml") -> Path:
    path = folder / name
    path.write_text(RECIPE.format(epochs=epochs, every=every))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    mp = pytest.MonkeyPatch()
    mp.setenv("SURGEON_CACHE", str(tmp / "cache"))
    yield tmp
    mp.undo()


@pytest.fixture(scope="module")
def uninterrupted(env):
    recipe = write_recipe(env)
    assert surgeon("train", str(recipe), "--out", str(env / "whole")) == 0
    return recipe, env / "whole"


def comparable(run: Path) -> dict:
    """Everything a run reports that depends neither on the clock nor on the feature cache's state."""
    volatile = {"seconds", "cache_hits", "cache_misses"}
    doc = json.loads((run / "results.json").read_text())
    cells = [{k: v for k, v in c.items() if k not in volatile} for c in doc["cells"]]
    lines = [{k: v for k, v in json.loads(l).items() if k not in volatile}
             for l in (run / "metrics.jsonl").read_text().splitlines()]
    weights = {c["name"]: load_file(str(run / "checkpoints" / c["name"] / "adapter.safetensors")) for c in cells}
    return {"cells": cells, "summary": doc["summary"], "metrics": lines, "weights": weights}


def assert_same_run(a: Path, b: Path) -> None:
    x, y = comparable(a), comparable(b)
    assert x["cells"] == y["cells"]
    assert x["summary"] == y["summary"]
    assert x["metrics"] == y["metrics"]
    for cell, tensors in x["weights"].items():
        assert tensors.keys() == y["weights"][cell].keys()
        for k, v in tensors.items():
            assert v.equal(y["weights"][cell][k]), k


def start_training(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "surgeon_cli.main", "train", str(recipe), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (code {proc.returncode}) before the moment to interrupt it:\n{err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training did not reach the moment to interrupt it")
        time.sleep(0.01)


def checkpoints(out: Path) -> list[Path]:
    work = out.parent / f".{out.name}.surgeon-partial"
    return sorted(work.glob("resume/*/ckpt-*/state.json"))


def test_sigkill_at_any_moment_then_resume_is_bit_for_bit(uninterrupted, env):
    recipe, whole = uninterrupted
    out = env / "killed"
    for kill_after in (1, 5):  # right after the first checkpoint, then again later in the resumed run
        extra = ("--resume",) if kill_after > 1 else ()
        proc = start_training(recipe, out, *extra)
        wait_for(lambda: any(int(p.parent.name[5:]) >= kill_after for p in checkpoints(out)), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists() and checkpoints(out)
    assert surgeon("train", str(recipe), "--out", str(out), "--resume") == 0
    assert_same_run(whole, out)
    assert not (out.parent / f".{out.name}.surgeon-partial").exists()
    assert not (out / "resume").exists()  # the training states go when the run is complete


def test_sigterm_writes_a_checkpoint_then_resume_matches(uninterrupted, env):
    recipe, whole = uninterrupted
    out = env / "terminated"
    proc = start_training(recipe, out, "--set", "checkpoint.every_steps=0")  # epoch ends only
    log = out.parent / f".{out.name}.surgeon-partial" / "metrics.jsonl"
    wait_for(lambda: log.exists() and '"step": 3,' in log.read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    lines = error_lines(err)
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0] and "--resume" in lines[0]
    [state] = checkpoints(out)
    progress = json.loads(state.read_text())["progress"]
    assert progress["epoch"] == 1 and not progress["epoch_done"] and progress["step"] >= 3
    assert surgeon("train", str(recipe), "--out", str(out), "--resume") == 0
    assert_same_run(whole, out)


def test_nan_loss_stops_naming_the_last_good_checkpoint(env, monkeypatch, capsys):
    from surgeon.train.tasks import ClassificationTask

    calls = {"n": 0}
    real = ClassificationTask.loss

    def poisoned(self, outputs, batch):
        loss = real(self, outputs, batch)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 7 else loss

    monkeypatch.setattr(ClassificationTask, "loss", poisoned)
    recipe = write_recipe(env, name="nan.toml")
    out = env / "nan"
    assert surgeon("train", str(recipe), "--out", str(out)) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1
    assert "loss became nan at epoch 1, step 7" in err[0]
    good = err[0].split("last good checkpoint: ")[1].split(";")[0]
    assert Path(good).name == "ckpt-000003" and (Path(good) / "state.json").is_file()
    assert json.loads((Path(good) / "state.json").read_text())["progress"]["step"] == 6
    assert not out.exists()


def test_resume_bad_input(env, tmp_path, capsys, tiny_dir):
    recipe = write_recipe(tmp_path, epochs=1)
    # nothing to resume
    assert surgeon("train", str(recipe), "--out", str(tmp_path / "none"), "--resume") == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "no interrupted run" in err[0]
    # a finished run
    assert surgeon("train", str(recipe), "--out", str(tmp_path / "done")) == 0
    capsys.readouterr()
    assert surgeon("train", str(recipe), "--out", str(tmp_path / "done"), "--resume") == 2
    assert "finished run" in capsys.readouterr().err
    # an interrupted run of another recipe: a different learning rate
    proc = start_training(recipe, tmp_path / "other", "--set", "checkpoint.every_steps=1")
    wait_for(lambda: bool(checkpoints(tmp_path / "other")), proc)
    proc.kill()
    proc.wait()
    assert surgeon("train", str(recipe), "--out", str(tmp_path / "other"), "--resume", "--set", "train.lr=1e-3") == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "another recipe" in err[0] and "train.lr" in err[0]
    # ... and a fresh start over it needs --force
    assert surgeon("train", str(recipe), "--out", str(tmp_path / "other")) == 2
    assert "--resume" in capsys.readouterr().err
    # --resume naming the work directory itself works like --resume auto
    work = tmp_path / ".other.surgeon-partial"
    assert surgeon("train", str(recipe), "--out", str(tmp_path / "other"), "--resume", str(work)) == 0


def test_resume_refuses_a_checkpoint_of_another_model(env, tmp_path, capsys):
    """Same recipe text, but the model directory it names now holds a different model."""
    from surgeon.tiny import save_tiny

    model = tmp_path / "model"
    save_tiny("ast", model, model_class="ASTForAudioClassification", max_length=100, hidden_size=32)
    recipe = tmp_path / "ref.toml"
    recipe.write_text(RECIPE.format(epochs=2, every=1).replace('tiny = "ast"', f'ref = "{model}"')
                      .replace("config = { max_length = 100, hidden_dropout_prob = 0.1 }\n", ""))
    out = tmp_path / "run"
    proc = start_training(recipe, out)
    wait_for(lambda: bool(checkpoints(out)), proc)
    proc.kill()
    proc.wait()
    save_tiny("ast", model, model_class="ASTForAudioClassification", max_length=100, hidden_size=48, force=True)
    assert surgeon("train", str(recipe), "--out", str(out), "--resume") == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "do not fit" in err[0] and "another model" in err[0]


def test_checkpoints_keep_the_newest(tmp_path):
    import torch

    from surgeon.train.resume import Checkpoints

    store = Checkpoints(tmp_path / "cell", keep=2)
    for seq in range(1, 5):
        store.write(seq, {"x": torch.full((2,), float(seq))}, {"format": "surgeon-resume/1", "seq": seq})
    assert [p.name for p in store.all()] == ["ckpt-000003", "ckpt-000004"]
    assert store.latest().name == "ckpt-000004"
    (tmp_path / "cell" / ".ckpt-000005.tmp-1").mkdir()  # a write killed midway is not a checkpoint
    assert store.latest().name == "ckpt-000004"


def test_sampler_global_batches_split_across_ranks():
    from surgeon.train.sampling import GlobalBatchSampler, epoch_order

    one = GlobalBatchSampler(30, 8, seed=2)
    one.set_epoch(3)
    two = [GlobalBatchSampler(30, 8, seed=2, rank=r, world=2) for r in range(2)]
    for s in two:
        s.set_epoch(3)
    whole = list(one)
    halves = [list(s) for s in two]
    assert [sorted(a + b) for a, b in zip(*halves)] == [sorted(b) for b in whole]
    assert sorted(i for b in whole for i in b) == list(range(30))
    assert epoch_order(30, 2, 3) != epoch_order(30, 2, 4)  # a new order every epoch, the same in every run
    one.set_epoch(3, skip=2)
    assert list(one) == whole[2:] and len(one) == len(whole) - 2 and one.total == len(whole)


def test_killed_after_the_last_epoch_before_the_cell_was_recorded(uninterrupted, env, monkeypatch):
    """The last moment a kill can hit: the cell's final weights are saved, its result not yet recorded.
    The resumed run redoes only the test evaluation and ends like the uninterrupted one."""
    from surgeon.train.workdir import WorkDir

    recipe, whole = uninterrupted
    out = env / "late"

    def killed(self, *args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(WorkDir, "finish_cell", killed)
    assert surgeon("train", str(recipe), "--out", str(out)) == 1
    work = out.parent / f".{out.name}.surgeon-partial"
    assert (work / "checkpoints").is_dir() and checkpoints(out)
    monkeypatch.undo()
    assert surgeon("train", str(recipe), "--out", str(out), "--resume") == 0
    assert_same_run(whole, out)
