"""Per-layer and per-tensor values in a merge config (issue 14 item 2: "per-tensor or per-layer
weights"), mergekit's gradients and conditions, and `method = "mam"` in a config."""
from __future__ import annotations

import json

import pytest
import torch

from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint
from surgeon.merging.config import parse_config
from surgeon.merging.settings import Where, evaluate, layer_t, parse_setting, where_in
from test_merge_seam import cli, write_config  # noqa: E402 (the config writer and CLI runner of the seam tests)


def tensors(path) -> dict:
    ck = Checkpoint.open(path)
    return {k: ck.get(k) for k in ck.keys()}


# -- evaluating a setting ------------------------------------------------------------------------

def mergekit_gradient(values, t):
    """mergekit's evaluate_setting for a list of numbers, transcribed."""
    scaled = t * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * values[i0] + frac * values[i1]


@pytest.mark.parametrize("values", [[0.0, 1.0], [0.2, 0.9, 0.4], [1.0, 0.0, 0.5, 0.25, 0.75]])
def test_a_gradient_interpolates_as_mergekit(values):
    for t in [i / 23 for i in range(24)] + [0.0, 1.0]:
        got = evaluate(parse_setting(values), Where("k", None, t))
        assert got == pytest.approx(mergekit_gradient(values, t), abs=1e-12)


def test_one_value_per_layer_gives_each_layer_its_value_exactly():
    values = [0.1 * i + 0.013 for i in range(49)]
    for i in range(49):
        assert evaluate(values, Where("k", None, layer_t(i, 49))) == values[i]


def test_conditions_first_match_by_role_or_key_substring():
    setting = parse_setting([{"roles": ["q", "k"], "value": 0.7}, {"filter": "intermediate", "value": [0, 1]},
                             {"value": 0.3}])
    assert evaluate(setting, Where("encoder.layer.0.attention.self.query.weight", "q", 0.0)) == 0.7
    assert evaluate(setting, Where("encoder.layer.1.intermediate.dense.weight", "ffn_in", 0.5)) == 0.5
    assert evaluate(setting, Where("embeddings.word_embeddings.weight", None, 0.0)) == 0.3
    only_q = parse_setting({"roles": ["q"], "value": 0.5})  # one table: a condition list of one
    assert evaluate(only_q, Where("x", "v", 0.0), default=1.0) == 1.0  # nothing matched: the key's default


def test_where_a_tensor_sits(tiny_dir):
    ck = Checkpoint.open(tiny_dir("hubert"))  # HubertModel, 2 layers: t = 0 and 1
    q0 = ck.role_key(0, "q")
    assert where_in(ck, q0) == Where(q0, "q", 0.0)
    assert where_in(ck, ck.role_key(1, "ffn_out", "bias")).t == 1.0
    final = next(k for k in ck.keys() if k.endswith("encoder.layer_norm.weight"))
    front = next(k for k in ck.keys() if "feature_extractor" in k)
    assert where_in(ck, final) == Where(final, None, 1.0)  # after the layers, as mergekit reads gradients
    assert where_in(ck, front) == Where(front, None, 0.0)


# -- checked in the config ------------------------------------------------------------------------

def _m(*refs, **extra):
    return [{"ref": r, **extra} for r in refs]


BAD = [
    ({"method": "ties", "base": "b", "models": _m("a", density=[0.5, 1.5])},
     "models.0.density: Input should be less than or equal to 1 (got 1.5 at 1)"),
    ({"method": "ties", "base": "b", "models": _m("a", weight=[{"roles": ["q"], "value": float("inf")}])},
     "models.0.weight: Input should be a finite number (got inf at 0.value)"),
    ({"method": "linear", "models": _m("a", weight="x")}, "models.0.weight: expected a number, a list of numbers"),
    ({"method": "linear", "models": _m("a", weight=[{"roles": ["qq"], "value": 1.0}])},
     "models.0.weight: a condition's roles: unknown role 'qq' (did you mean 'q'?)"),
    ({"method": "linear", "models": _m("a", weight=[{"vlaue": 1.0}])}, "models.0.weight: a condition's"),
    ({"method": "slerp", "models": _m("a", "b"), "parameters": {"t": [0.0, 1.2]}},
     "parameters.t.1: Input should be less than or equal to 1 (got 1.2)"),
    ({"method": "slerp", "models": _m("a", "b"), "parameters": {"t": [{"filter": "attention", "value": -1.0}]}},
     "parameters.t.0.value: Input should be greater than or equal to 0 (got -1.0)"),
    ({"method": "ties", "base": "b", "models": _m("a"), "parameters": {"normalize": [True, False]}},
     "parameters.normalize: Input should be a valid boolean"),
    ({"method": "mam", "models": _m("a"), "parameters": {"lam": 0.1}}, "base: required by mam"),
    ({"method": "mam", "base": "t", "models": _m("a", "b"), "parameters": {"lam": 0.1}},
     "models: mam takes exactly 1 models (got 2)"),
    ({"method": "mam", "base": "t", "models": _m("a", weight=0.1), "parameters": {"lam": 0.1}},
     "models.0.weight: mam has no per-model weight; the source's share is lam in [parameters]"),
    ({"method": "mam", "base": "t", "models": _m("a")}, "parameters.lam: required key is missing"),
    ({"method": "mam", "base": "t", "models": _m("a"), "parameters": {"lam": [0.1, 2.0]}},
     "parameters.lam.1: Input should be less than or equal to 1 (got 2.0)"),
]


@pytest.mark.parametrize("doc,expected", BAD, ids=[b[1][:40] for b in BAD])
def test_each_number_of_a_setting_is_checked(doc, expected):
    with pytest.raises(SurgeonError) as e:
        parse_config(doc, "merge.toml")
    assert "\n" not in str(e.value) and expected in str(e.value), str(e.value)


def test_a_per_layer_float_parameter_is_kept_as_given():
    config = parse_config({"method": "slerp", "models": _m("a", "b"), "parameters": {"t": [0.0, 0.5, 1.0]}})
    assert config.per_tensor and config.params.t == 0.0  # Params holds the first number
    _, _, params = config.values_at(Where("k", "q", 0.75))
    assert params.t == 0.75 and config.params.t == 0.0
    scalar = parse_config({"method": "slerp", "models": _m("a", "b"), "parameters": {"t": 0.5}})
    assert not scalar.per_tensor


# -- end to end ----------------------------------------------------------------------------------

@pytest.fixture
def pair(tiny_dir, tmp_path):
    """Two tiny BERTs (2 layers) with different weights, and a third as a base."""
    from surgeon.tiny import save_tiny

    return [save_tiny("bert", tmp_path / f"m{s}", seed=s) for s in (1, 2, 3)]


def test_a_gradient_of_weights_takes_each_layer_from_its_model(pair, tmp_path):
    a, b, _ = pair
    cfg = write_config(tmp_path / "m.toml", "linear", [{"ref": a, "weight": [1.0, 0.0]}, {"ref": b, "weight": [0.0, 1.0]}])
    assert cli("merge", cfg, "--out", tmp_path / "out") == 0
    out, ta, tb = tensors(tmp_path / "out"), tensors(a), tensors(b)
    ck = Checkpoint.open(a)
    for key, t in out.items():
        if not t.is_floating_point():
            continue
        expect = ta if where_in(ck, key).t == 0.0 else tb  # layer 0 and the embeddings from a; layer 1, pooler from b
        assert torch.equal(t, expect[key]), key
    assert torch.equal(out[ck.role_key(0, "q")], ta[ck.role_key(0, "q")])
    assert torch.equal(out[ck.role_key(1, "q")], tb[ck.role_key(1, "q")])
    card = (tmp_path / "out" / "README.md").read_text()
    assert "linear merge of 2 models" in card and "weight per layer or tensor" in card


def test_each_tensor_equals_a_scalar_merge_with_its_own_values(pair, tmp_path):
    """A ties merge with per-layer density and per-role weights: every tensor is, bit for bit, the
    tensor of a plain config with that tensor's numbers."""
    a, b, base = pair
    per = [{"ref": a, "weight": [{"roles": ["q", "k", "v"], "value": 0.9}, {"value": 0.4}], "density": [0.3, 0.8]},
           {"ref": b, "weight": 0.6, "density": 0.5}]
    cfg = write_config(tmp_path / "per.toml", "ties", per, base=base, parameters={"lambda": [1.0, 0.5]})
    assert cli("merge", cfg, "--out", tmp_path / "per") == 0
    got = tensors(tmp_path / "per")
    ck = Checkpoint.open(base)
    cases = {(0.9, 0.3, 1.0): ck.role_key(0, "q"), (0.4, 0.3, 1.0): ck.role_key(0, "ffn_in"),
             (0.9, 0.8, 0.5): ck.role_key(1, "v", "bias"), (0.4, 0.8, 0.5): ck.role_key(1, "o")}
    for (w, d, lam), key in cases.items():
        plain = write_config(tmp_path / "plain.toml", "ties", [{"ref": a, "weight": w, "density": d},
                             {"ref": b, "weight": 0.6, "density": 0.5}], base=base, parameters={"lambda": lam})
        assert cli("merge", plain, "--out", tmp_path / "plain", "--force") == 0
        assert torch.equal(got[key], tensors(tmp_path / "plain")[key]), key


def test_slerp_conditions_per_role_and_the_dry_run_lists_the_values(pair, tmp_path, capsys):
    a, b, _ = pair
    cfg = write_config(tmp_path / "s.toml", "slerp", [{"ref": a}, {"ref": b}],
                       parameters={"t": [{"roles": ["q", "k", "v"], "value": 0.0}, {"value": 1.0}]})
    capsys.readouterr()
    assert cli("merge", cfg, "--dry-run", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    ck = Checkpoint.open(a)
    assert doc["parameters"]["t"] == [{"roles": ["q", "k", "v"], "value": 0.0}, {"value": 1.0}]
    assert doc["values"][ck.role_key(0, "k")] == {"t": 0.0} and doc["values"][ck.role_key(0, "o")] == {"t": 1.0}
    assert cli("merge", cfg, "--dry-run") == 0
    assert f"{ck.role_key(0, 'k')} t 0" in capsys.readouterr().out
    assert cli("merge", cfg, "--out", tmp_path / "out") == 0
    out, ta, tb = tensors(tmp_path / "out"), tensors(a), tensors(b)
    for key in out:
        if out[key].is_floating_point():
            role = where_in(ck, key).role
            assert torch.equal(out[key], (ta if role in ("q", "k", "v") else tb)[key]), key


# -- method = "mam" ---------------------------------------------------------------------------------

def test_mam_in_a_config_equals_the_flags(tiny_dir, tmp_path):
    src, tgt = tiny_dir("bert"), tiny_dir("hubert")
    assert cli("merge", "--source", src, "--target", tgt, "--lam", "0.1,0.3", "--out", tmp_path / "flags") == 0
    cfg = write_config(tmp_path / "mam.toml", "mam", [{"ref": src}], base=tgt, parameters={"lam": [0.1, 0.3]})
    assert cli("merge", cfg, "--out", tmp_path / "config") == 0
    flags, config = tensors(tmp_path / "flags"), tensors(tmp_path / "config")
    assert flags.keys() == config.keys()
    assert all(torch.equal(flags[k], config[k]) for k in flags)
    assert (tmp_path / "config" / "README.md").exists()  # the model card, as the flags write it


def test_mam_config_layers_roles_and_per_role_lam(tiny_dir, tmp_path, capsys):
    src, tgt = tiny_dir("bert"), tiny_dir("hubert")
    (tmp_path / "sel").mkdir()
    (tmp_path / "sel" / "selection.json").write_text(json.dumps({"layers": [1]}))
    cfg = write_config(tmp_path / "mam.toml", "mam", [{"ref": src}], base=tgt,
                       parameters={"lam": [{"roles": ["q"], "value": 0.5}, {"value": 0.0}],
                                   "layers_from": "sel/selection.json", "bias": False})
    capsys.readouterr()
    assert cli("merge", cfg, "--dry-run", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["layers"] == [1] and doc["bias"] is False and doc["lam_by_role"] == {"1": {"q": 0.5, "k": 0.0, "v": 0.0}}
    assert cli("merge", cfg, "--out", tmp_path / "out") == 0
    out, t_tgt, t_src = tensors(tmp_path / "out"), tensors(tgt), tensors(src)
    ck, sk = Checkpoint.open(tgt), Checkpoint.open(src)
    q1 = ck.role_key(1, "q")
    expect = t_tgt[q1] + 0.5 * (t_src[sk.role_key(1, "q")] - t_tgt[q1])
    assert torch.allclose(out[q1], expect, atol=1e-7) and not torch.equal(out[q1], t_tgt[q1])
    for key in out:  # everything else is the target's, bit for bit
        if key != q1:
            assert torch.equal(out[key], t_tgt[key]), key
    o_only = write_config(tmp_path / "o.toml", "mam", [{"ref": src}], base=tgt, roles=["o"], parameters={"lam": 1.0})
    assert cli("merge", o_only, "--out", tmp_path / "o") == 0
    o1 = ck.role_key(1, "o")
    assert torch.equal(tensors(tmp_path / "o")[o1], t_src[sk.role_key(1, "o")])
    assert torch.equal(tensors(tmp_path / "o")[ck.role_key(1, "q")], t_tgt[ck.role_key(1, "q")])


def test_mam_combine_is_the_file_paths_interpolation():
    from surgeon.merging.mam import interpolate
    from surgeon.merging.methods import make_params, method
    from surgeon.merging.tasks import TensorTask

    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    for lam in (0.0, 0.1, 0.5, 0.7, 1.0):
        got = method("mam").combine(TensorTask("k", (src,), tgt, (1.0,), (1.0,)), make_params("mam", {"lam": lam}))
        assert torch.equal(got, torch.from_numpy(interpolate(src.numpy(), tgt.numpy(), lam))), lam
    assert torch.equal(method("mam").combine(TensorTask("k", (src,), tgt, (1.0,), (1.0,)), make_params("mam", {"lam": 1.0})), src)


def test_roles_flag_for_mam_and_instead_of_a_configs(tiny_dir, tmp_path, capsys):
    src, tgt = tiny_dir("bert"), tiny_dir("hubert")
    capsys.readouterr()
    assert cli("merge", "--source", src, "--target", tgt, "--lam", "0.5", "--roles", "q,o", "--dry-run", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    ck = Checkpoint.open(tgt)
    assert doc["roles"] == ["q", "o"] and ck.role_key(0, "o") in doc["merged_tensors"]
    assert ck.role_key(0, "k") not in doc["merged_tensors"]
    assert cli("merge", "--source", src, "--target", tgt, "--lam", "0.5", "--roles", "q,kk", "--dry-run") == 2
    assert "--roles: unknown role 'kk' (did you mean 'k'?)" in capsys.readouterr().err
    cfg = write_config(tmp_path / "mam.toml", "mam", [{"ref": src}], base=tgt, parameters={"lam": 0.5})
    assert cli("merge", cfg, "--roles", "v", "--dry-run", "--json") == 0
    assert json.loads(capsys.readouterr().out)["roles"] == ["v"]
