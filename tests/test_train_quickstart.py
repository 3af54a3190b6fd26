"""End to end on the CPU: the quickstart recipe trains a tiny AST + Soft-MoA on synthetic sounds and
beats chance by a wide margin; the run directory holds everything; eval reproduces the test metrics;
the same seed gives the same metrics bit for bit; the feature cache is hit from the second epoch."""
from __future__ import annotations

import json

import pytest

from surgeon_cli.main import run as cli


def surgeon(*args) -> int:
    with pytest.raises(SystemExit) as e:
        cli(list(args))
    return e.value.code


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quickstart")
    mp = pytest.MonkeyPatch()
    mp.setenv("SURGEON_CACHE", str(tmp / "cache"))
    assert surgeon("train", "quickstart", "--out", str(tmp / "run")) == 0
    yield tmp / "run"
    mp.undo()


def test_quickstart_beats_chance(quickstart_run):
    doc = json.loads((quickstart_run / "results.json").read_text())
    chance = 1 / len(doc["dataset"]["classes"])  # 4 classes: 0.25
    assert doc["summary"]["test_accuracy"]["mean"] >= chance + 0.45
    cell = doc["cells"][0]
    assert cell["counts"] == {"train": 96, "valid": 32, "test": 32}
    # the selected epoch is the best on validation, whatever the test split says
    epochs = [json.loads(line) for line in (quickstart_run / "metrics.jsonl").read_text().splitlines()]
    valid = {e["epoch"]: e["valid_accuracy"] for e in epochs if e["event"] == "epoch"}
    assert valid[cell["best_epoch"]] == max(valid.values())
    assert min(e for e, v in valid.items() if v == max(valid.values())) == cell["best_epoch"]


def test_run_directory(quickstart_run):
    names = {p.relative_to(quickstart_run).as_posix() for p in quickstart_run.rglob("*") if p.is_file()}
    cell = "official-seed0"
    for expected in ("recipe.toml", "metrics.jsonl", "results.json", f"checkpoints/{cell}/adapter.safetensors",
                     f"checkpoints/{cell}/surgery.json", f"plots/{cell}-curves.png",
                     f"plots/{cell}-experts-layers.png", f"plots/{cell}-experts-classes.png"):
        assert expected in names
    doc = json.loads((quickstart_run / "results.json").read_text())
    experts = doc["cells"][0]["experts"]
    assert len(experts["layers"]) == 2 and len(experts["per_layer"][0]) == 8  # 2 layers x 8 experts
    for shares in experts["per_layer"]:  # each expert's share of the output: sums to one per layer
        assert sum(shares) == pytest.approx(1.0, abs=1e-4)
    steps = [json.loads(l) for l in (quickstart_run / "metrics.jsonl").read_text().splitlines()]
    lrs = [s["lr"]["method"] for s in steps if s["event"] == "step"]
    assert lrs[0] < 1e-2 and lrs[-1] == pytest.approx(0.0, abs=1e-12)  # cosine per step, down to zero


def test_eval_reproduces_the_test_metrics(quickstart_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SURGEON_CACHE", str(quickstart_run.parent / "cache"))
    assert surgeon("eval", "quickstart", "--run", str(quickstart_run), "--out", str(tmp_path / "eval.json")) == 0
    trained = json.loads((quickstart_run / "results.json").read_text())["cells"][0]["test"]
    evaluated = json.loads((tmp_path / "eval.json").read_text())["cells"][0]["test"]
    assert evaluated == trained


def test_existing_run_needs_force(quickstart_run):
    assert surgeon("train", "quickstart", "--out", str(quickstart_run)) == 2


SMALL = ["--set", "data.options.per_class=10", "--set", "train.epochs=2", "--set", "train.batch_size=8"]


def test_same_seed_same_metrics_bit_for_bit_and_cache_hits(tmp_path, monkeypatch):
    monkeypatch.setenv("SURGEON_CACHE", str(tmp_path / "cache"))  # fresh: run a fills it
    for name in ("a", "b"):
        assert surgeon("train", "quickstart", *SMALL, "--out", str(tmp_path / name)) == 0
    a, b = (json.loads((tmp_path / n / "results.json").read_text())["cells"] for n in ("a", "b"))
    assert [(c["valid"], c["test"], c["best_epoch"]) for c in a] == [(c["valid"], c["test"], c["best_epoch"]) for c in b]
    lines = {n: [json.loads(l) for l in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in "ab"}
    steps = {n: [l for l in lines[n] if l["event"] == "step"] for n in "ab"}
    assert steps["a"] == steps["b"]
    # the feature cache: computed in the first epoch of run a, read from then on
    n_train = a[0]["counts"]["train"]
    epochs = {n: [l for l in lines[n] if l["event"] == "epoch"] for n in "ab"}
    assert [(e["cache_hits"], e["cache_misses"]) for e in epochs["a"]] == [(0, n_train), (n_train, 0)]
    assert [(e["cache_hits"], e["cache_misses"]) for e in epochs["b"]] == [(n_train, 0), (n_train, 0)]
    # and a different seed trains differently
    assert surgeon("train", "quickstart", *SMALL, "--seed", "1", "--out", str(tmp_path / "c")) == 0
    c = [json.loads(l) for l in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert [l for l in c if l["event"] == "step"] != steps["a"]


def test_demo_trains_and_inspects(tmp_path, monkeypatch, capsys):
    """`surgeon demo`, the README's first command: trains the quickstart and inspects what it saved."""
    monkeypatch.setenv("SURGEON_CACHE", str(tmp_path / "cache"))
    assert surgeon("demo", "--out", str(tmp_path / "demo")) == 0
    out = capsys.readouterr().out
    assert "test_accuracy:" in out and f"run written to {tmp_path / 'demo'}" in out
    import re

    assert re.search(r"surgery\s+soft-moa", out)
    # it ends with the next three commands: activate, inspect what it trained, a paper recipe
    nxt = out.split("\nnext:\n")[1].splitlines()
    assert len(nxt) == 3 and ("activate" in nxt[0] or "surgeon --help" in nxt[0])
    assert f"surgeon inspect {tmp_path / 'demo' / 'checkpoints' / 'official-seed0'}" in nxt[1]
    assert "surgeon train ast-soft-moa-pf-esc50" in nxt[2]
    # the demo's own output is a model: its tiny base is rebuilt from the record
    from surgeon.api import load

    checkpoint = tmp_path / "demo" / "checkpoints" / "official-seed0"
    assert load(checkpoint).config.num_labels == 4
    assert surgeon("strip", str(checkpoint), "--out", str(tmp_path / "base")) == 0
    assert surgeon("demo", "--out", str(tmp_path / "demo")) == 0  # run again: replaced, as the help says
