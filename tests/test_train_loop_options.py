"""The training loop's options, each resumable bit for bit like the rest: train.max_steps and
train.patience stop a cell early; [data.mixup] mixes items and labels; [log] sends every metrics
line to TensorBoard (read back with tensorboard's own reader) and CSV as well; the plots mark the
selected epoch. A run is interrupted in-process the way SIGTERM does it (the stop flag raised at a
chosen step: a checkpoint, exit 143), then resumed with --resume."""
from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
from safetensors.torch import load_file

from surgeon_cli.main import run as cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 3 classes x 10 items: 18 train, 6 valid, 6 test; batch 6: three steps per epoch
RECIPE = """
[model]
tiny = "ast"
config = {{ max_length = 100 }}

[method]
name = "soft-moa"
num_experts = 4
bottleneck = 4

[data]
format = "synthetic"
options = {{ num_classes = 3, per_class = 10, seconds = 1.0, seed = 2 }}
max_frames = 100
{data}

[train]
epochs = {epochs}
batch_size = 6
lr = {lr}
seed = 1
{train}

[checkpoint]
every_steps = 1

[log]
to = {loggers}
"""
VOLATILE = {"seconds", "cache_hits", "cache_misses"}


def surgeon(*args) -> int:
    with pytest.raises(SystemExit) as e:
        cli([str(a) for a in args])
    return e.value.code


def write(folder: Path, name: str, *, epochs=3, lr=5e-3, data="", train="", loggers='["jsonl"]') -> Path:
    path = folder / f"{name}.toml"
    path.write_text(RECIPE.format(epochs=epochs, lr=lr, data=data, train=train, loggers=loggers))
    return path


def lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def comparable(run: Path) -> dict:
    doc = json.loads((run / "results.json").read_text())
    cells = [{k: v for k, v in c.items() if k not in VOLATILE} for c in doc["cells"]]
    metrics = [{k: v for k, v in line.items() if k not in VOLATILE} for line in lines(run)]
    weights = {c["name"]: load_file(str(run / "checkpoints" / c["name"] / "adapter.safetensors")) for c in cells}
    return {"cells": cells, "metrics": metrics, "weights": weights}


def assert_same_run(a: Path, b: Path) -> None:
    x, y = comparable(a), comparable(b)
    assert x["cells"] == y["cells"] and x["metrics"] == y["metrics"]
    for cell, tensors in x["weights"].items():
        assert tensors.keys() == y["weights"][cell].keys()
        assert all(v.equal(y["weights"][cell][k]) for k, v in tensors.items())


def interrupt_at(monkeypatch, step: int) -> None:
    """Raise the stop flag (as SIGTERM does) when the cell has made `step` optimiser steps."""
    from surgeon.train.loop import CellTrainer

    real = CellTrainer.train_batch

    def train_batch(self, epoch, i, batch, tally):
        if self.progress.step == step:
            self.stop.signum = signal.SIGTERM
        return real(self, epoch, i, batch, tally)

    monkeypatch.setattr(CellTrainer, "train_batch", train_batch)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    mp = pytest.MonkeyPatch()
    mp.setenv("SURGEON_CACHE", str(tmp / "cache"))
    yield tmp
    mp.undo()


MIXUP = "mixup = { probability = 0.5, alpha = 10.0 }"


@pytest.fixture(scope="module")
def stopped_run(env):
    """Mixup on, train.max_steps = 5 (in epoch 2 of 3), every logger."""
    recipe = write(env, "steps", data=MIXUP, train="max_steps = 5", loggers='["jsonl", "tensorboard", "csv"]')
    assert surgeon("train", recipe, "--out", env / "whole") == 0
    return recipe, env / "whole"


def test_max_steps_stops_mid_epoch_and_the_schedule_ends_there(stopped_run):
    _, run = stopped_run
    events = lines(run)
    steps = [e for e in events if e["event"] == "step"]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]
    assert [e["epoch"] for e in epochs] == [1, 2]  # the partial epoch 2 is validated
    assert steps[-1]["lr"]["method"] == pytest.approx(0.0, abs=1e-12)  # cosine over min(max_steps, epochs)
    [stop] = [e for e in events if e["event"] == "stop"]
    assert stop["reason"] == "max_steps" and stop["step"] == 5 and stop["epoch"] == 2
    cell = json.loads((run / "results.json").read_text())["cells"][0]
    assert cell["best_epoch"] in (1, 2)


def test_resume_with_mixup_and_max_steps_is_bit_for_bit(stopped_run, env, monkeypatch):
    recipe, whole = stopped_run
    out = env / "resumed"
    interrupt_at(monkeypatch, 4)  # epoch 2, after its first batch
    assert surgeon("train", recipe, "--out", out) == 143
    monkeypatch.undo()
    assert not out.exists()
    assert surgeon("train", recipe, "--out", out, "--resume") == 0
    assert_same_run(whole, out)
    # the other loggers were written afresh from the cut-back metrics.jsonl: what the whole run shows
    for event in ("step", "epoch", "cell"):
        rows = {r: [{k: v for k, v in row.items() if k not in VOLATILE}
                    for row in csv.DictReader(open(r / f"metrics-{event}.csv"))] for r in (whole, out)}
        assert rows[whole] == rows[out] and rows[whole]
    assert scalars(whole, "step/loss") == scalars(out, "step/loss")


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [cell] = (run / "tensorboard").iterdir()
    acc = EventAccumulator(str(cell), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_events_read_back_with_tensorboards_reader(stopped_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run = stopped_run
    events = lines(run)
    acc = EventAccumulator(str(run / "tensorboard" / "official-seed1"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    steps = [e for e in events if e["event"] == "step"]
    assert [(s, pytest.approx(v)) for s, v in scalars(run, "step/loss")] == [(e["step"], e["loss"]) for e in steps]
    assert [v for _, v in scalars(run, "step/lr/method")] == pytest.approx([e["lr"]["method"] for e in steps])
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [s for s, _ in scalars(run, "epoch/valid_accuracy")] == [e["epoch"] for e in epochs]
    assert "test/accuracy" in tags["scalars"]
    # MoA: each expert's share per layer, per epoch on validation, as a histogram over the experts
    layer = next(iter(epochs[0]["experts"]))
    hist = acc.Histograms(f"epoch/experts/{layer}")
    assert [h.step for h in hist] == [1, 2]
    assert list(hist[0].histogram_value.bucket) == pytest.approx(epochs[0]["experts"][layer])
    assert any(t.startswith("test/experts/") for t in tags["histograms"])


def test_loggers_show_values_others_add(tmp_path):
    """A value another part adds to a metrics line (Learnable-MAM's lams per layer) reaches every logger."""
    from surgeon.train.loggers import RunLog

    log = RunLog(tmp_path, ["jsonl", "tensorboard", "csv"])
    for epoch, lam in ((1, 0.1), (2, 0.25)):
        log({"event": "epoch", "cell": "c", "epoch": epoch, "valid_loss": 1.0 / epoch, "lam": {"3": lam, "7": lam / 2}})
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "metrics-epoch.csv")))
    assert [float(r["lam/3"]) for r in rows] == [0.1, 0.25] and [float(r["lam/7"]) for r in rows] == [0.05, 0.125]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard" / "c"))
    acc.Reload()
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("epoch/lam/3")] == [(1, 0.1), (2, 0.25)]


def test_tensorboard_missing_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    recipe = write(tmp_path, "tb", loggers='["tensorboard"]')
    assert surgeon("train", recipe, "--out", tmp_path / "run") == 2
    assert "pip install 'surgeon[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


def test_patience_stops_when_validation_stops_improving_and_resumes(env, monkeypatch):
    from surgeon.train.workdir import WorkDir

    # a learning rate too small to change a prediction: validation accuracy ties from epoch 1 on
    recipe = write(env, "patience", epochs=5, lr=1e-12, train="patience = 2")
    assert surgeon("train", recipe, "--out", env / "p-whole") == 0
    events = lines(env / "p-whole")
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3]
    assert [e["reason"] for e in events if e["event"] == "stop"] == ["patience"]
    assert json.loads((env / "p-whole" / "results.json").read_text())["cells"][0]["best_epoch"] == 1
    # killed after the stop was decided and before the cell was recorded: the resumed run trains no
    # further epoch and ends like the uninterrupted one
    monkeypatch.setattr(WorkDir, "finish_cell", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    assert surgeon("train", recipe, "--out", env / "p-late") == 1
    monkeypatch.undo()
    assert surgeon("train", recipe, "--out", env / "p-late", "--resume") == 0
    assert_same_run(env / "p-whole", env / "p-late")


@pytest.mark.parametrize("key", ["patience", "max_steps"])
def test_stopping_options_are_checked(tmp_path, capsys, key):
    recipe = write(tmp_path, key, train=f"{key} = 0")
    assert surgeon("validate", recipe) == 2
    assert f"train.{key}" in capsys.readouterr().err


# -- mixup --------------------------------------------------------------------------------------

def spec(**changes):
    from surgeon.data.mixup import MixupSpec

    return MixupSpec(**{"probability": 1.0, "alpha": 10.0, "mix": "features", "num_classes": 3, **changes})


def datasets(**mixup):
    from surgeon.data import AudioDataset, load_index
    from surgeon.data.features import FeatureSpec

    index = load_index("synthetic", None, num_classes=3, per_class=6, seconds=0.5, seed=0)
    train = [it for it in index.items if it.group == "train"]
    fs = FeatureSpec(max_frames=50)
    plain = AudioDataset(train, fs, train=True, seed=4, synthetic=index.synthetic)
    mixed = AudioDataset(train, fs, train=True, seed=4, synthetic=index.synthetic, mixup=spec(**mixup) if mixup else None)
    return plain, mixed


def test_soft_targets_sum_to_one_and_mix_the_partners_labels():
    from surgeon.data.mixup import draw

    plain, mixed = datasets(probability=1.0)
    for epoch in (1, 2):
        mixed.set_epoch(epoch)
        for i, item in enumerate(mixed.items):
            out = mixed[i]
            d = draw(mixed.mixup, 4, epoch, item.key, len(mixed))
            assert out["targets"].sum().item() == pytest.approx(1.0, abs=1e-6)
            partner = mixed.items[d.partner]
            assert out["targets"][item.label].item() >= d.lam - 1e-6
            assert out["targets"][partner.label].item() >= 1 - d.lam - 1e-6
            x, y = plain[i]["input_values"], plain[d.partner]["input_values"]  # features mixed as drawn
            assert out["input_values"].allclose(d.lam * x + (1 - d.lam) * y, atol=1e-6)
    # the batch carries them; the loss is the soft-target cross-entropy
    import torch

    from surgeon.data import collate
    from surgeon.train.tasks import ClassificationTask

    batch = collate([mixed[i] for i in range(4)])
    logits = torch.randn(4, 3)
    expected = -(batch["targets"] * logits.log_softmax(-1)).sum(-1).mean()
    assert ClassificationTask().loss(logits, batch).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("changes", [{"alpha": 0.0}, {"probability": 0.0}])
def test_alpha_or_probability_zero_is_the_identity(changes):
    plain, mixed = datasets(**changes)
    for i in range(len(plain)):
        a, b = plain[i], mixed[i]
        assert a["input_values"].equal(b["input_values"]) and a.keys() == b.keys()  # not even targets


def test_waveform_mixup_mixes_before_the_features():
    from surgeon.data.features import compute_features
    from surgeon.data.mixup import draw, mix

    _, mixed = datasets(mix="waveform", probability=1.0)
    item = mixed.items[0]
    d = draw(mixed.mixup, 4, 0, item.key, len(mixed))
    expected = compute_features(mix(mixed._raw(item), mixed._raw(mixed.items[d.partner]), d.lam), mixed.spec)
    assert mixed[0]["input_values"].equal(expected)


def test_mixup_is_classification_only(tmp_path, capsys):
    recipe = write(tmp_path, "ctc", data=MIXUP)
    recipe.write_text(recipe.read_text().replace('tiny = "ast"', 'tiny = "ast"\ntask = "ctc"'))
    assert surgeon("validate", recipe) == 2
    assert "data.mixup" in capsys.readouterr().err


def test_paper_004_speech_commands_recipes_train_with_mixup():
    import tomllib

    from surgeon.recipes.bundled import bundled_path, names
    from surgeon.recipes.schema import Recipe

    for name in names():
        r = Recipe.model_validate(tomllib.loads(bundled_path(name).read_text()))
        if name.startswith(("loaa-imagenet-ast-", "imagenet-ast-")) and name.endswith("-gsc"):  # paper 004
            assert (r.data.mixup.probability, r.data.mixup.alpha, r.data.mixup.mix) == (0.6, 10.0, "waveform"), name
        else:
            assert r.data.mixup is None, name


# -- plots --------------------------------------------------------------------------------------

def test_curves_mark_the_selected_epoch_with_integer_ticks():
    from matplotlib.ticker import MaxNLocator

    from surgeon.train import plots

    history = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e, "valid_accuracy": 0.1 * e} for e in (1, 2, 3)]
    fig = plots.curves_figure(history, "t", selected=2)
    for ax in fig.axes:
        marks = [line for line in ax.get_lines() if list(line.get_xdata()) == [2, 2]]
        assert len(marks) == 1 and "selected" in marks[0].get_label()
        assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
        assert all(float(t).is_integer() for t in ax.get_xticks())
    experts = {"layers": ["layer 0", "layer 1"], "per_layer": [[0.5, 0.5], [0.3, 0.7]],
               "per_class": [[[0.5, 0.5]] * 3, [[0.3, 0.7]] * 3]}
    maps = [plots.expert_layers_figure(experts, "l"), plots.expert_classes_figure(experts, ["a", "b", "c"], "c")]
    assert {im.get_cmap().name for fig in maps for ax in fig.axes for im in ax.get_images()} == {plots.EXPERT_CMAP}
