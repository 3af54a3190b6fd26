"""The TOML merge config (issue 14 item 2): mergekit's names, checked against the chosen method, every
problem in one line naming its dotted key."""
from __future__ import annotations

import pytest

from surgeon.errors import SurgeonError
from surgeon.merging.config import load_config, parse_config, role_names

EXAMPLE = """
method = "ties"
base = "base"
dtype = "float32"
roles = ["q", "k", "v"]
[parameters]
normalize = true
lambda = 0.9
[[models]]
ref = "a"
weight = 0.5
density = 0.6
[[models]]
ref = "hf:someone/model-b"
weight = 0.3
"""


def test_the_issue_example_loads(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "base").mkdir()
    path = tmp_path / "merge.toml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    assert config.method == "ties" and config.dtype == "float32" and config.roles == ["q", "k", "v"]
    assert config.base == str(tmp_path / "base")  # relative paths resolve against the config's folder
    assert config.models[0].ref == str(tmp_path / "a")
    assert config.models[1].ref == "hf:someone/model-b"  # not a path here: an alias or Hub id stays
    assert config.weights == (0.5, 0.3) and config.densities == (0.6, 1.0)
    assert config.params.normalize is True and config.params.lambda_ == 0.9 and config.params.consensus == "sum"
    assert config.module().NAMES == ("ties",)


def test_mergekit_spelling_and_defaults():
    config = parse_config({"method": "dare_ties", "base": "b", "models": [{"ref": "a", "density": 0.5}],
                           "parameters": {"seed": 4}})
    assert config.method == "dare-ties" and config.params.seed == 4 and config.params.consensus == "sum"
    assert config.params.rescale is True and config.params.normalize is False
    slerp = parse_config({"method": "slerp", "models": [{"ref": "a"}, {"ref": "b"}], "parameters": {"t": 0.3}})
    assert slerp.params.t == 0.3 and slerp.base is None


def _m(*refs, **extra):
    return [{"ref": r, **extra} for r in refs]


BAD = [
    ({"method": "tie", "models": _m("a")}, "method: unknown merge method 'tie' (did you mean 'ties'?)"),
    ({"method": "ties", "models": _m("a")}, "base: required by ties"),
    ({"method": "task-arithmetic", "base": "b", "models": []}, "models: at least one [[models]] entry"),
    ({"method": "slerp", "models": _m("a"), "parameters": {"t": 0.5}}, "models: slerp takes exactly 2 models (got 1)"),
    ({"method": "slerp", "models": _m("a", "b")}, "parameters.t: required key is missing"),
    ({"method": "slerp", "models": _m("a", "b"), "parameters": {"t": 1.5}}, "parameters.t: Input should be less"),
    ({"method": "slerp", "models": _m("a", "b", weight=0.5), "parameters": {"t": 0.5}},
     "models.0.weight: slerp has no per-model weight; set t in [parameters]"),
    ({"method": "ties", "base": "b", "models": _m("a", density=0.0)}, "models.0.density: Input should be greater than 0"),
    ({"method": "ties", "base": "b", "models": _m("a", density=1.2)}, "models.0.density: Input should be less than"),
    ({"method": "linear", "models": _m("a", density=0.5)}, "models.0.density: linear has no density"),
    ({"method": "linear", "models": _m("a", weight=float("nan"))}, "models.0.weight: Input should be a finite number"),
    ({"method": "linear", "models": [{"ref": "a", "weight": 1}, {"ref": "b", "weight": -1}]},
     "models: linear with normalize = true needs weights that do not sum to 0"),
    ({"method": "linear", "models": _m("a"), "dtype": "fp16"}, "dtype: 'fp16' is not one of float32, float16, bfloat16"),
    ({"method": "linear", "models": _m("a"), "roles": ["q", "kk"]}, "roles: unknown role 'kk' (did you mean 'k'?)"),
    ({"method": "linear", "models": _m("a"), "roles": []}, "roles: empty"),
    ({"method": "linear", "models": _m("a"), "parameters": {"normalise": True}},
     "parameters.normalise: unknown key (did you mean 'normalize'?)"),
    ({"method": "ties", "base": "b", "models": _m("a"), "parameters": {"lamda": 1}},
     "parameters.lamda: unknown key (did you mean 'lambda'?)"),
    ({"method": "ties", "base": "b", "models": _m("a"), "parameters": {"lambda": "x"}}, "parameters.lambda: Input should"),
    ({"method": "dare-linear", "base": "b", "models": _m("a"), "parameters": {"consensus": "sum"}},
     "parameters.consensus: dare-linear has no sign consensus"),
    ({"method": "dare-ties", "base": "b", "models": _m("a"), "parameters": {"consensus": "vote"}},
     "parameters.consensus: Input should be 'sum' or 'count'"),
    ({"method": "dare-ties", "base": "b", "models": _m("a"), "parameters": {"seed": -1}}, "parameters.seed: Input should be"),
    ({"method": "linear", "models": [{"ref": "a", "wieght": 1}]}, "models.0.wieght: unknown key (did you mean 'weight'?)"),
    ({"method": "linear", "models": _m("a"), "bsae": "x"}, "bsae: unknown key (did you mean 'base'?)"),
    ({"models": _m("a")}, "method: required key is missing"),
    ({"method": "linear", "models": [{"weight": 1}]}, "models.0.ref: required key is missing"),
]


@pytest.mark.parametrize("doc,expected", BAD, ids=[b[1][:40] for b in BAD])
def test_each_problem_is_one_line_naming_the_key(doc, expected):
    with pytest.raises(SurgeonError) as e:
        parse_config(doc, "merge.toml")
    text = str(e.value)
    assert "\n" not in text and text.startswith("merge.toml: ")
    assert expected in text, text
    assert e.value.exit_code == 2


def test_every_problem_at_once():
    with pytest.raises(SurgeonError) as e:
        parse_config({"method": "ties", "models": _m("a", density=2.0), "parameters": {"normalise": 1}}, "m.toml")
    text = str(e.value)
    assert text.startswith("m.toml: 2 problems: ") and "models.0.density" in text and "parameters.normalise" in text
    with pytest.raises(SurgeonError) as e:
        parse_config({"method": "ties", "models": _m("a")}, "m.toml")
    assert "problems" not in str(e.value)


def test_file_errors_are_one_line(tmp_path):
    with pytest.raises(SurgeonError, match="no such merge config"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("method = \n")
    with pytest.raises(SurgeonError, match="not valid TOML") as e:
        load_config(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(SurgeonError, match="is a directory"):
        load_config(tmp_path)


def test_roles_are_anatomy_roles():
    assert {"q", "k", "v", "o", "ffn_in", "ffn_out", "attn_norm", "ffn_norm"} <= set(role_names())
    assert "attn" not in role_names()  # memory-only sub-layer modules hold no tensors of their own


def test_parsing_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; from surgeon.merging.config import parse_config; "
            "parse_config({'method': 'ties', 'base': 'b', 'models': [{'ref': 'a', 'density': 0.5}]}); "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
