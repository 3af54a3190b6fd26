"""k-fold, few-shot and bad data through `surgeon train`, on miniature copies of the real layouts."""
from __future__ import annotations

import json
import statistics

import pytest

from surgeon.data.miniature import make_miniature
from surgeon_cli.main import run as cli

FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "data.max_frames=100",
        "--set", 'model.tiny="ast"', "--set", "method.reduction=8"]


def surgeon(*args) -> int:
    with pytest.raises(SystemExit) as e:
        cli(list(args))
    return e.value.code


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    return make_miniature("esc50", tmp_path_factory.mktemp("esc") / "ESC-50-master")


@pytest.fixture(autouse=True, scope="module")
def feature_cache(tmp_path_factory):
    """One feature cache for the module: the clips' features are computed once."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SURGEON_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture
def recipe(tmp_path):
    """ast-bottleneck-pf-par-esc50 turned into a tiny-model recipe."""
    from surgeon.recipes.bundled import bundled_path

    text = bundled_path("ast-bottleneck-pf-par-esc50").read_text().replace('ref = "ast"\n', "")
    path = tmp_path / "esc.toml"
    path.write_text(text)
    return path


def test_kfold_runs_every_fold_and_aggregates(recipe, esc50, tmp_path, monkeypatch):
    assert surgeon("train", str(recipe), *FAST, "--set", f"data.root={esc50}", "--out", str(tmp_path / "run")) == 0
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [c["name"] for c in doc["cells"]] == [f"fold{i}-seed0" for i in range(1, 6)]
    for c in doc["cells"]:  # ESC-50 rotation: 3 folds train, 1 valid, 1 test (3 classes x 2 clips per fold)
        assert c["counts"] == {"train": 18, "valid": 6, "test": 6}
    acc = [c["test"]["accuracy"] for c in doc["cells"]]
    s = doc["summary"]["test_accuracy"]
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(statistics.fmean(acc))
    assert s["std"] == pytest.approx(statistics.stdev(acc))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [f"fold{i}-seed0" for i in range(1, 6)]


def test_one_fold_and_few_shot_seeds(recipe, esc50, tmp_path, monkeypatch):
    args = [*FAST, "--set", f"data.root={esc50}", "--set", "data.few_shot={k = 2, seeds = [3, 4]}"]
    assert surgeon("train", str(recipe), *args, "--fold", "2", "--out", str(tmp_path / "run")) == 0
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [c["name"] for c in doc["cells"]] == ["fold2-seed3", "fold2-seed4"]
    assert all(c["counts"]["train"] == 2 * 3 for c in doc["cells"])  # exactly k per class
    assert doc["summary"]["test_accuracy"]["n"] == 2


def test_corrupt_audio_stops_or_is_skipped(recipe, tmp_path, monkeypatch):
    root = make_miniature("esc50", tmp_path / "ESC-50-master")
    bad = sorted((root / "audio").glob("*.wav"))[0]
    bad.write_bytes(b"RIFF not really a wav")
    args = [*FAST, "--set", f"data.root={root}", "--fold", "1"]
    assert surgeon("train", str(recipe), *args, "--out", str(tmp_path / "stop")) == 2
    assert not (tmp_path / "stop").exists()
    assert surgeon("train", str(recipe), *args, "--set", 'data.on_error="skip"', "--out", str(tmp_path / "skip")) == 0
    doc = json.loads((tmp_path / "skip" / "results.json").read_text())
    assert len(doc["skipped"]) == 1 and bad.name in doc["skipped"][0]


def test_start_from_a_saved_surgery_and_eval_a_model(tiny_dir, tmp_path):
    """A recipe can start from an `inject` output; `eval --model` evaluates a saved surgery directly."""
    import surgeon.api as api
    from surgeon.hf import load_pretrained

    base = tiny_dir("ast")
    model = api.inject(load_pretrained(base), "bottleneck", reduction=8)
    api.save_surgery(model, tmp_path / "surgery")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nsurgery = "surgery"\n[data]\nformat = "synthetic"\n'
                      "options = { num_classes = 3, per_class = 5 }\nmax_frames = 100\n"
                      "[train]\nepochs = 1\nbatch_size = 8\n")
    assert surgeon("train", str(recipe), "--out", str(tmp_path / "run")) == 0
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    ckpt = tmp_path / "run" / "checkpoints" / "official-seed0"
    record = json.loads((ckpt / "surgery.json").read_text())
    assert [m["method"] for m in record["methods"]] == ["bottleneck"]
    assert surgeon("eval", str(recipe), "--model", str(ckpt), "--out", str(tmp_path / "eval.json")) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())["cells"][0]["test"]
    assert evaluated == doc["cells"][0]["test"]


def test_ast_split_trains_on_four_folds_and_tests_the_last_epoch(recipe, esc50, tmp_path):
    """data.protocol = "kfold-rest" (paper 004's ESC-50 split, AST's): no validation fold to select on."""
    fast = [a.replace("train.epochs=1", "train.epochs=2") for a in FAST]
    assert surgeon("train", str(recipe), *fast, "--set", f"data.root={esc50}", "--set", 'data.protocol="kfold-rest"',
                   "--fold", "1", "--out", str(tmp_path / "run")) == 0
    (cell,) = json.loads((tmp_path / "run" / "results.json").read_text())["cells"]
    assert cell["counts"] == {"train": 24, "valid": 0, "test": 6}
    assert cell["best_epoch"] == 2
