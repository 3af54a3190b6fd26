"""`surgeon sweep` (paper 003: lam chosen on a dev split), end to end on a tiny BERT -> tiny HuBERT-CTC."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPE = """
[model]
tiny = "hubert"
task = "ctc"
[method]
name = "full"
{merge}
[data]
format = "transcripts"
root = "{root}"
[train]
epochs = 1
batch_size = 4
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_dir):
    from surgeon.speech.datasets import make_synthetic_manifest

    root = tmp_path_factory.mktemp("sweep")
    data = make_synthetic_manifest(root / "data", num=24, seed=0, letters="AB", letter_seconds=0.03, max_words=1,
                                   max_letters=2)
    merge = f'[merge]\nsource = "{tiny_dir("bert")}"\nlearnable = false\ninit_lam = 0.1'
    (root / "r.toml").write_text(RECIPE.format(merge=merge, root=data.parent))
    (root / "plain.toml").write_text(RECIPE.format(merge="", root=data.parent))
    return {"root": root, "recipe": root / "r.toml", "plain": root / "plain.toml", "target": tiny_dir("hubert"),
            "source": tiny_dir("bert")}


def test_sweep_scores_each_lam_picks_the_best_and_writes_only_it(cli, setup, tmp_path):
    best_dir = tmp_path / "best"
    r = cli("sweep", setup["recipe"], "--model", setup["target"], "--lam", "0,0.5,1", "--metric", "loss",
            "--split", "test", "--out", best_dir, "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert [row["lam"] for row in doc["rows"]] == [0.0, 0.5, 1.0]
    assert doc["layers"] == [0, 1] and doc["bias"] is True and doc["source"] == str(setup["source"])
    losses = {row["lam"]: row["loss"] for row in doc["rows"]}
    assert len(set(losses.values())) == 3  # the merge changes the model
    assert doc["best"]["lam"] == min(losses, key=losses.get)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # one model written, no temporaries
    assert (best_dir / "README.md").read_text().count(f"lam {doc['best']['lam']:g}") >= 1

    def evaluated(model):
        out = tmp_path / f"eval-{model.name}.json"
        e = cli("eval", setup["plain"], "--model", model, "--out", out, "--json")
        assert e.code == 0, e.err
        return e.json()["cells"][0]["test"]["loss"]

    # the written model is the one that was scored; lam 0 is the target alone; lam 0.5 is `surgeon merge`'s
    assert evaluated(best_dir) == pytest.approx(losses[doc["best"]["lam"]], rel=1e-5)
    assert evaluated(setup["target"]) == pytest.approx(losses[0.0], rel=1e-5)
    merged = tmp_path / "merged"
    m = cli("merge", "--source", setup["source"], "--target", setup["target"], "--lam", "0.5", "--out", merged)
    assert m.code == 0, m.err
    assert evaluated(merged) == pytest.approx(losses[0.5], rel=1e-5)


def test_sweep_table_on_the_dev_split(cli, setup):
    r = cli("sweep", setup["recipe"], "--lam", "0.05,0.25", "--layers", "1")
    assert r.code == 0, r.err
    assert "valid split" in r.out and "best: lam" in r.out and "layers 1," in r.out
    assert "0.05" in r.out and "0.25" in r.out and "wer" in r.out


@pytest.mark.parametrize("args, problem", [
    (["--lam", "0.1,1.5"], "--lam: 1.5 is outside [0, 1]"),
    (["--lam", "0.1,x"], "--lam: 'x' is not a number"),
    (["--lam", "0.1,0.1"], "--lam: 0.1 is listed twice"),
    (["--lam", "0.1", "--split", "train"], "--split: expected one of valid, test"),
    (["--lam", "0.1", "--metric", "accuracy"], "--metric: 'accuracy' is not a metric of the ctc task"),
    (["--lam", "0.1", "--layers", "7"], "--layers"),
])
def test_sweep_bad_input_is_one_line_exit_2(cli, setup, args, problem):
    r = cli("sweep", setup["recipe"], *args)
    assert r.code == 2 and problem in r.err and r.err.count("\n") == 1, r.err


def test_sweep_needs_a_source_and_refuses_an_existing_out(cli, setup, tmp_path):
    r = cli("sweep", setup["plain"], "--lam", "0.1")
    assert r.code == 2 and "no merge source" in r.err
    (tmp_path / "taken").mkdir()
    r = cli("sweep", setup["recipe"], "--lam", "0.1", "--out", tmp_path / "taken")
    assert r.code == 2 and "--force" in r.err and "lam" not in r.out


def test_pick_best_direction_and_ties():
    from surgeon.speech.lam_sweep import pick_best

    rows = [{"lam": 0.25, "wer": 0.2}, {"lam": 0.05, "wer": 0.2}, {"lam": 0.1, "wer": 0.3}]
    assert pick_best(rows, "wer", higher=False)["lam"] == 0.05  # equal WER: the smaller lam
    assert pick_best(rows, "wer", higher=True)["lam"] == 0.1


def test_sweep_unreadable_source_fails_first(cli, setup, tmp_path):
    r = cli("sweep", setup["recipe"], "--lam", "0.1", "--source", tmp_path / "nothing")
    assert r.code == 2 and r.err.count("\n") == 1 and "lam" not in r.out, r.err
