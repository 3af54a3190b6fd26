"""`surgeon validate` on every bundled recipe, with data.root pointed at a miniature copy of the
dataset's layout and a tiny model of the same family standing in for the (uncached) checkpoint;
and its exit code 2 with the problems listed."""
from __future__ import annotations

import tomllib

import pytest

from surgeon.data.miniature import make_miniature
from surgeon.recipes.bundled import bundled_path, names
from surgeon.recipes.validate import validate_recipe
from surgeon_cli.main import run as cli


@pytest.fixture(scope="module")
def miniatures(tmp_path_factory):
    base = tmp_path_factory.mktemp("mini")
    cache = {}

    def root(fmt: str):
        if fmt not in cache:
            cache[fmt] = make_miniature(fmt, base / fmt)
        return cache[fmt]

    return root


def overrides_for(name: str, miniatures) -> list[str]:
    fmt = recipe_format(name)
    out = [] if fmt == "synthetic" else [f"data.root={miniatures(fmt)}"]
    if name.startswith("fewshot-"):
        out.append("data.few_shot.k=1")  # the miniatures hold one or two training clips per class
    return out


def recipe_format(name: str) -> str:
    return tomllib.loads(bundled_path(name).read_text())["data"]["format"]


def test_every_bundled_recipe_validates(miniatures):
    """Every bundled recipe whose dataset layout has a miniature (surgeon.data.miniature) validates;
    that covers all of quickstart and recipes/generate.py's (speech recipes are checked by their own
    tests, with their transcribed-speech fixtures)."""
    from surgeon.data.miniature import MINIATURES
    from surgeon_recipes.generate import all_recipes

    covered = [n for n in names() if recipe_format(n) in (*MINIATURES, "synthetic")]
    assert set(all_recipes()) | {"quickstart"} <= set(covered)
    failures = {}
    for name in covered:
        report = validate_recipe(name, overrides_for(name, miniatures), offline_model="tiny")
        if report["problems"]:
            failures[name] = report["problems"]
        else:
            assert report["model"]["trainable"] > 0 and report["data"]["splits"], name
    assert not failures


def test_validate_report(miniatures):
    report = validate_recipe("ast-bottleneck-pf-par-esc50", overrides_for("ast-bottleneck-pf-par-esc50", miniatures),
                             offline_model="tiny")
    groups = {g["group"]: g for g in report["model"]["groups"]}
    assert groups["method"]["trainable"] > 0 and groups["method"]["lr"] == 5e-3
    assert [s["name"] for s in report["data"]["splits"]] == [f"fold{i}" for i in range(1, 6)]
    assert report["data"]["num_classes"] == 3 and report["device"] == "cpu"


def test_validate_exit_2_lists_problems(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["validate", "ast-lora-esc50", "--set", f"data.root={tmp_path / 'nowhere'}", "--offline-model", "tiny",
             "--set", 'train.precision="fp16"', "--set", 'train.device="cpu"'])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 problem(s)" in err[0]
    assert "is not a directory" in err[0] and "fp16 needs a CUDA device" in err[0]


def test_validate_ok_exit_0(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["validate", "quickstart"])
    assert e.value.code == 0
    assert "ok" in capsys.readouterr().out
