"""Recipes: strict schema, one-line errors with dotted paths and did-you-mean, overrides, paths,
bundled recipes (ls / cp), and the CLI's exit code 2 on every bad recipe."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from surgeon.errors import SurgeonError
from surgeon.recipes.load import dump_recipe, load_recipe, parse_override
from surgeon.recipes.schema import METHODS, default_lr

GOOD = """
[model]
tiny = "ast"
[method]
name = "bottleneck"
reduction = 8
[data]
format = "synthetic"
[train]
epochs = 1
batch_size = 4
"""


def write(tmp_path, text, name="r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path, overrides=()) -> str:
    with pytest.raises(SurgeonError) as e:
        load_recipe(path, list(overrides))
    return str(e.value)


def test_good_recipe_and_defaults(tmp_path):
    r = load_recipe(write(tmp_path, GOOD))
    assert r.train.betas == (0.9, 0.98) and r.train.eps == 1e-6 and r.train.weight_decay == 0.1
    assert r.train.scheduler == "cosine" and r.train.warmup_steps == 0
    assert r.eval.checkpoint == "best" and r.eval.select == "accuracy" and r.eval.metrics is None
    assert r.methods[0].options() == {"reduction": 8.0}
    assert r.train.group_lrs("bottleneck") == {"method": 5e-3, "backbone": 5e-3, "head": 5e-3}


def test_default_learning_rates_follow_the_papers():
    assert default_lr("full") == 5e-5
    assert default_lr("linear") == 1e-3
    assert default_lr("prompt") == default_lr("prefix") == 1e-2
    for m in ("bottleneck", "lora", "bitfit", "soft-moa", "dense-moa", "conformer"):
        assert default_lr(m) == 5e-3


def test_method_names_match_the_petl_registry():
    from surgeon.methods import METHOD_NAMES

    assert set(METHODS) == set(METHOD_NAMES)


def test_unknown_key_has_dotted_path_and_did_you_mean(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace("epochs = 1", "epohcs = 1\nepochs = 1")))
    assert "train.epohcs: unknown key (did you mean 'epochs'?)" in msg
    assert "\n" not in msg


def test_every_error_at_once(tmp_path):
    text = GOOD.replace('tiny = "ast"', 'tiny = "ast"\nreff = 1').replace("epochs = 1", 'epochs = "ten"')
    text = text.replace('name = "bottleneck"', 'name = "botleneck"').replace("[data]", '[data]\non_error = "ignore"')
    msg = error_of(write(tmp_path, text))
    assert "4 problems" in msg
    for part in ("model.reff: unknown key", "train.epochs: Input should be a valid integer",
                 "method.name: unknown method 'botleneck' (did you mean 'bottleneck'?)", "data.on_error:"):
        assert part in msg


def test_wrong_types_and_values(tmp_path):
    assert "train.lr: expected a number" in error_of(write(tmp_path, GOOD), ["train.lr='fast'"])
    assert "train.lr: must be positive" in error_of(write(tmp_path, GOOD), ["train.lr=0"])
    assert "method.residual: Input should be a valid boolean" in error_of(write(tmp_path, GOOD), ['method.residual="maybe"'])
    assert "train.precision:" in error_of(write(tmp_path, GOOD), ["train.precision='fp8'"])


def test_missing_dataset_root(tmp_path):
    text = GOOD.replace('format = "synthetic"', 'format = "esc50"')
    assert "data.root: required for format 'esc50'" in error_of(write(tmp_path, text))
    msg = error_of(write(tmp_path, text), ["data.root=no/such/dir"])
    assert "data.root:" in msg and "is not a directory" in msg


def test_recipe_not_utf8_is_a_one_line_error(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes(b'[model]\nref = "\xff"\n')
    with pytest.raises(SurgeonError, match="r.toml: not UTF-8 text"):
        load_recipe(path)


def test_method_options_are_checked(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace("reduction = 8", "reduktion = 8")))
    assert "method.reduktion: unknown key (did you mean 'reduction'?)" in msg


def test_several_methods(tmp_path):
    text = GOOD.replace("[method]", "[[method]]") + '\n[[method]]\nname = "lora"\nrnak = 2\n'
    # [[method]] tables after [train] belong to the array of tables
    assert "method.1.rnak: unknown key (did you mean 'rank'?)" in error_of(write(tmp_path, text))
    r = load_recipe(write(tmp_path, text.replace("rnak", "rank")))
    assert [m.name for m in r.methods] == ["bottleneck", "lora"]


def test_overrides_use_toml_values():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("data.few_shot.seeds=[1, 2]") == (["data", "few_shot", "seeds"], [1, 2])
    assert parse_override("method.residual=false") == (["method", "residual"], False)
    assert parse_override("data.root=/data/ESC-50-master") == (["data", "root"], "/data/ESC-50-master")
    with pytest.raises(SurgeonError, match="expected KEY=VALUE"):
        parse_override("train.lr")


def test_relative_paths(tmp_path, monkeypatch):
    (tmp_path / "sub" / "esc").mkdir(parents=True)
    path = write(tmp_path / "sub", GOOD.replace('format = "synthetic"', 'format = "esc50"\nroot = "esc"'))
    r = load_recipe(path)
    assert Path(r.data.root) == tmp_path / "sub" / "esc"  # against the recipe file
    monkeypatch.chdir(tmp_path)
    r = load_recipe(path, ["data.root=sub/esc"])
    assert Path(r.data.root) == tmp_path / "sub" / "esc"  # --set: against the current directory


def test_surgeon_data_variable(tmp_path, monkeypatch):
    (tmp_path / "ESC-50-master").mkdir()
    monkeypatch.setenv("SURGEON_DATA", str(tmp_path))
    r = load_recipe("ast-lora-esc50")
    assert Path(r.data.root) == tmp_path / "ESC-50-master"


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe("quickstart")
    again = load_recipe(write(tmp_path, dump_recipe(r)))
    assert again.model_dump() == r.model_dump()


def test_bundled_recipes_ls_and_cp(tmp_path):
    from surgeon.recipes.bundled import copy, describe, names

    all_names = names()
    assert "quickstart" in all_names and len(all_names) > 100
    assert describe("quickstart").startswith("Quickstart")
    dest = copy("quickstart", tmp_path)
    assert dest.read_text() == Path(load_recipe("quickstart")._source).read_text()
    with pytest.raises(SurgeonError, match="exists"):
        copy("quickstart", tmp_path)
    with pytest.raises(SurgeonError, match="did you mean 'quickstart'"):
        copy("quikstart", tmp_path / "x.toml")


def test_generated_recipes_are_up_to_date():
    """recipes/*.toml are what recipes/generate.py writes from its tables."""
    from surgeon.recipes.bundled import bundled_path
    from surgeon_recipes.generate import all_recipes, render

    for name, doc in all_recipes().items():
        assert bundled_path(name).read_text() == render(doc), name


def surgeon(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "surgeon_cli.main", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("change, expected", [
    (("epochs = 1", "epohcs = 1"), "train.epohcs: unknown key (did you mean 'epochs'?)"),
    (("epochs = 1", 'epochs = "ten"'), "train.epochs: Input should be a valid integer"),
    (('format = "synthetic"', 'format = "esc50"\nroot = "missing"'), "data.root:"),
    (('name = "bottleneck"', 'name = "adapter"'), "method.name: unknown method 'adapter'"),
])
def test_cli_bad_recipe_exit_2_one_line(tmp_path, change, expected):
    path = write(tmp_path, GOOD.replace(*change))
    res = surgeon("train", str(path), "--out", str(tmp_path / "run"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("surgeon: error: ") and expected in lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_metric_of_another_task_exit_2(tmp_path):
    res = surgeon("train", str(write(tmp_path, GOOD + '[eval]\nmetrics = ["wer"]\n')), "--out", str(tmp_path / "run"))
    assert res.returncode == 2
    assert "eval.metrics: 'wer' is not a metric of the classification task" in res.stderr


def test_cli_unknown_reader_option_exit_2(tmp_path):
    res = surgeon("train", str(write(tmp_path, GOOD.replace("[data]", "[data]\noptions = { per_clas = 3 }"))),
                  "--out", str(tmp_path / "run"))
    assert res.returncode == 2
    assert "data.options.per_clas: not an option of the synthetic reader (did you mean 'per_class'?)" in res.stderr


def test_cli_fp16_on_cpu_exit_2(tmp_path):
    path = write(tmp_path, GOOD + 'precision = "fp16"\ndevice = "cpu"\n')
    res = surgeon("train", str(path), "--out", str(tmp_path / "run"))
    assert res.returncode == 2
    assert "train.precision: fp16 needs a CUDA device" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_recipes_ls_cp(tmp_path):
    res = surgeon("recipes", "ls")
    assert res.returncode == 0 and "quickstart" in res.stdout
    res = surgeon("recipes", "cp", "quickstart", str(tmp_path / "mine.toml"))
    assert res.returncode == 0 and (tmp_path / "mine.toml").is_file()
    res = surgeon("recipes", "cp", "quickstart", str(tmp_path / "mine.toml"))
    assert res.returncode == 2 and "--force" in res.stderr


def test_cli_start_up_does_not_import_torch():
    code = ("import sys; import surgeon_cli.main, surgeon_cli.commands.train, surgeon.recipes.load, "
            "surgeon.recipes.schema; print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "False"
