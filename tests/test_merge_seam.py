"""The merge seam: one MAM plan, three runners that agree; noise statistics; a bias on one side only;
multi-model merges from a TOML config through the streaming runner."""
from __future__ import annotations

import json

import pytest
import torch

from surgeon.io.checkpoint import Checkpoint

QKV = ("q", "k", "v")


def cli(*args) -> int:
    from surgeon_cli.main import run

    with pytest.raises(SystemExit) as e:
        run([str(a) for a in args])
    return e.value.code


def bits(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def rewrite(ckpt: Checkpoint, out, fn=lambda k, t: t, drop=()):
    """A copy of a model directory with its tensors passed through fn(key, tensor) (and some dropped)."""
    from surgeon.io.writer import save_state_dict

    out.mkdir(parents=True)
    (out / "config.json").write_bytes((ckpt.path / "config.json").read_bytes())
    save_state_dict(out, {k: fn(k, ckpt.get(k)) for k in ckpt.keys() if k not in drop})
    return out


def dyadic(k, t):
    """Multiples of 1/64 in (-2, 2): every lerp at lam 0.5 is exact, fused or not, on any CPU."""
    return (torch.round(t.clamp(-1.9, 1.9) * 64) / 64).to(t.dtype) if t.is_floating_point() else t


# -- the three MAM paths -------------------------------------------------------------------------

def test_file_memory_and_learnable_mam_give_identical_tensors(tiny_dir, tmp_path):
    from surgeon.hf import load_pretrained
    from surgeon.merging.mam import run_merge
    from surgeon.merging.plan import build_plan, open_source
    from surgeon.speech import learnable_mam as lmam
    from surgeon.speech.recipe_merge import static_merge

    src = rewrite(Checkpoint.open(tiny_dir("bert")), tmp_path / "src", dyadic)
    tgt_dir = rewrite(Checkpoint.open(tiny_dir("hubert")), tmp_path / "tgt", dyadic)
    tgt = Checkpoint.open(tgt_dir)
    # lam 0.5: sigmoid(0) is 0.5 exactly, so this holds for any lam parametrisation exact at init
    run_merge(build_plan(tgt, open_source(str(src), tgt), "0.5", layers="1"), tmp_path / "file")
    filed = load_pretrained(tmp_path / "file").state_dict()
    memory = load_pretrained(tgt_dir)
    assert static_merge(memory, src, layers=[1], lam=0.5) == [1]
    learnable = load_pretrained(tgt_dir)
    lmam.apply(learnable, src, layers=[1], init_lam=0.5)
    source = Checkpoint.open(src)
    n = 0
    for name, value in memory.state_dict().items():
        assert bits(value) == bits(filed[name]), name
        module, _, leaf = name.rpartition(".")
        if ".layers.1.attention." in name and module.split(".")[-1] in ("q_proj", "k_proj", "v_proj"):
            got = getattr(learnable.get_submodule(module), leaf)
            assert bits(got) == bits(value), name
            role = {"q_proj": "q", "k_proj": "k", "v_proj": "v"}[module.split(".")[-1]]
            s, t = source.get(source.role_key(1, role, leaf)), tgt.get(tgt.role_key(1, role, leaf))
            assert torch.equal(value, 0.5 * s + 0.5 * t)  # eq. 1, exact on dyadic values
            n += 1
    assert n == 6


# -- noise statistics (issue 13 item 4) ----------------------------------------------------------

def _pooled(ckpt, leaf="weight"):
    ts = [ckpt.get(k).double().reshape(-1) for i in range(ckpt.dims["num_layers"]) for r in QKV
          if (k := ckpt.role_key(i, r, leaf)) in ckpt]
    t = torch.cat(ts)
    return t.mean().item(), t.var(correction=0).item()


def test_noise_model_statistics_pool_the_models_qkv(tiny_dir, tmp_path):
    hidden = dict(hidden_size=128, num_attention_heads=2)
    tgt = Checkpoint.open(tiny_dir("hubert", **hidden))
    src = Checkpoint.open(tiny_dir("bert", hidden_size=64, num_attention_heads=2, num_hidden_layers=3))
    for kind, stats in (("target", tgt), ("source", src)):
        extra = ["--noise-from", src.path] if kind == "source" else []
        out_dir = tmp_path / kind
        assert cli("merge", "--source", f"noise:{kind}", "--target", tgt.path, "--lam", "1", "--no-bias",
                   "--noise-stats", "model", "--out", out_dir, *extra) == 0
        out = Checkpoint.open(out_dir)
        mean, var = _pooled(stats)
        for i in range(2):
            for role in QKV:
                noise = out.get(tgt.role_key(i, role)).double()
                assert noise.shape == tgt.info(tgt.role_key(i, role)).shape  # the target's shape
                assert abs(noise.mean().item() - mean) < 5 * (var / noise.numel()) ** 0.5
                assert abs(noise.var(correction=0).item() / var - 1) < 0.05
        assert json.loads((out_dir / "merge.json").read_text())["noise_stats"] == "model"


def test_noise_from_model_of_another_shape_per_tensor(tiny_dir, tmp_path):
    tgt = Checkpoint.open(tiny_dir("hubert"))  # 2 layers x 32
    src = Checkpoint.open(tiny_dir("bert", num_hidden_layers=4))  # 4 layers x 48
    assert cli("merge", "--source", "noise:source", "--noise-from", src.path, "--target", tgt.path, "--lam", "1",
               "--noise-stats", "tensor", "--out", tmp_path / "out") == 0
    out = Checkpoint.open(tmp_path / "out")
    key = tgt.role_key(1, "v")
    assert out.info(key).shape == tgt.info(key).shape
    ref = src.get(src.role_key(2, "v")).double()  # target layer 1 of 2 <- layer 2 of 4
    assert abs(out.get(key).double().std().item() / ref.std().item() - 1) < 0.35


def test_normal_noise_leaves_biases_alone(tiny_dir, tmp_path, capsys):
    tgt = Checkpoint.open(tiny_dir("hubert"))
    assert cli("merge", "--source", "noise:normal", "--target", tgt.path, "--lam", "1", "--out", tmp_path / "out") == 0
    out = Checkpoint.open(tmp_path / "out")
    for i in range(2):
        for role in QKV:
            assert bits(out.get(tgt.role_key(i, role, "bias"))) == bits(tgt.get(tgt.role_key(i, role, "bias")))
            assert not torch.equal(out.get(tgt.role_key(i, role)), tgt.get(tgt.role_key(i, role)))
    doc = json.loads((tmp_path / "out" / "merge.json").read_text())
    assert doc["num_merged"] == 6 and any("biases" in n for n in doc["notes"])


# -- a bias on one side only (issue 11 item 3) ---------------------------------------------------

def test_bias_on_target_only_is_kept_and_said(tiny_dir, tmp_path, capsys):
    bert = Checkpoint.open(tiny_dir("bert"))
    tgt = Checkpoint.open(tiny_dir("hubert"))
    drop = [bert.role_key(i, "k", "bias") for i in range(2)]
    src = Checkpoint.open(rewrite(bert, tmp_path / "nokbias", drop=drop))
    args = ("merge", "--source", src.path, "--target", tgt.path, "--lam", "1")
    assert cli(*args, "--dry-run", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert any(n.startswith("k bias: only the target") for n in doc["notes"])
    assert cli(*args, "--dry-run") == 0
    assert "k bias: only the target" in capsys.readouterr().out
    assert cli(*args, "--out", tmp_path / "out") == 0
    out = Checkpoint.open(tmp_path / "out")
    for i in range(2):
        assert bits(out.get(tgt.role_key(i, "k"))) == bits(src.get(src.role_key(i, "k")))  # weight merged
        assert bits(out.get(tgt.role_key(i, "k", "bias"))) == bits(tgt.get(tgt.role_key(i, "k", "bias")))  # kept
        assert bits(out.get(tgt.role_key(i, "q", "bias"))) == bits(src.get(src.role_key(i, "q", "bias")))
    assert any("k bias" in n for n in json.loads((tmp_path / "out" / "merge.json").read_text())["notes"])


# -- multi-model merges from a config ------------------------------------------------------------

@pytest.fixture
def three(tiny_dir, tmp_path):
    """Three same-family tiny BERTs with different weights, and their base."""
    base = Checkpoint.open(tiny_dir("bert"))
    out = [base.path]
    for j in (1, 2, 3):
        g = torch.Generator().manual_seed(j)
        out.append(rewrite(base, tmp_path / f"m{j}", lambda k, t: t + 0.01 * torch.randn(t.shape, generator=g)
                           if t.is_floating_point() else t))
    return out


def toml_value(v) -> str:
    """A TOML value: inline tables and arrays as TOML writes them, scalars as JSON (the same there)."""
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v)


def write_config(path, method, models, *, base=None, roles=None, dtype=None, parameters=None):
    lines = [f'method = "{method}"']
    if base:
        lines.append(f'base = "{base}"')
    if dtype:
        lines.append(f'dtype = "{dtype}"')
    if roles:
        lines.append(f"roles = {toml_value(roles)}")
    if parameters:
        lines.append("[parameters]")
        lines += [f"{k} = {toml_value(v)}" for k, v in parameters.items()]
    for m in models:
        lines.append("[[models]]")
        lines += [f"{k} = {toml_value(str(v) if k == 'ref' else v)}" for k, v in m.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_linear_of_three_models_every_tensor(three, tmp_path):
    base, *models = three
    cfg = write_config(tmp_path / "m.toml", "linear",
                       [{"ref": m, "weight": w} for m, w in zip(models, (1.0, 2.0, 1.0))])
    assert cli("merge", cfg, "--out", tmp_path / "out") == 0
    out, cks = Checkpoint.open(tmp_path / "out"), [Checkpoint.open(m) for m in models]
    assert list(out.keys()) == list(cks[0].keys())
    for k in out.keys():
        if out.info(k).is_float:
            want = (cks[0].get(k) + 2 * cks[1].get(k) + cks[2].get(k)) / 4
            torch.testing.assert_close(out.get(k), want, rtol=0, atol=1e-6)
        else:
            assert bits(out.get(k)) == bits(cks[0].get(k))
    assert json.loads((tmp_path / "out" / "merge.json").read_text())["method"] == "linear"


def test_ties_on_roles_copies_the_rest_from_base_and_casts(three, tmp_path, capsys):
    base, *models = three
    spec = [{"ref": m, "weight": 1.0, "density": 1.0} for m in models]
    cfg = write_config(tmp_path / "t.toml", "ties", spec, base=base, roles=["q", "k", "v"], dtype="float16",
                       parameters={"normalize": False})
    assert cli("merge", cfg, "--dry-run", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["num_merged"] == 12 and doc["dtype"] == "F16" and not (tmp_path / "out").exists()
    assert cli("merge", cfg, "--out", tmp_path / "out") == 0
    out, b = Checkpoint.open(tmp_path / "out"), Checkpoint.open(base)
    cks = [Checkpoint.open(m) for m in models]
    merged = {b.role_key(i, r, leaf) for i in range(2) for r in QKV for leaf in ("weight", "bias")}
    for k in out.keys():
        if k in merged:
            deltas = torch.stack([c.get(k) - b.get(k) for c in cks])
            sign = torch.where(deltas.sum(0) >= 0, 1.0, -1.0)
            want = b.get(k) + (deltas * (deltas.sign() == sign)).sum(0)  # elected sign, disjoint sum
            torch.testing.assert_close(out.get(k).float(), want, rtol=0, atol=2e-3)
            assert out.get(k).dtype == torch.float16
        elif b.info(k).is_float:
            assert torch.equal(out.get(k), b.get(k).half())
        else:
            assert bits(out.get(k)) == bits(b.get(k))


def test_config_refuses_mam_flags_and_mixed_families(three, tiny_dir, tmp_path, capsys):
    base, *models = three
    cfg = write_config(tmp_path / "c.toml", "linear", [{"ref": models[0]}, {"ref": tiny_dir("hubert")}])
    assert cli("merge", cfg, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "one family" in err and "Traceback" not in err
    ok = write_config(tmp_path / "ok.toml", "linear", [{"ref": m} for m in models])
    assert cli("merge", ok, "--lam", "0.1", "--out", tmp_path / "out") == 2
    assert "--lam" in capsys.readouterr().err
    assert cli("merge", "--target", base, "--out", tmp_path / "out") == 2
    assert "--source" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def variants(tiny_dir, tmp_path, family, n):
    base = Checkpoint.open(tiny_dir(family))
    out = []
    for j in range(1, n + 1):
        g = torch.Generator().manual_seed(j)
        out.append(rewrite(base, tmp_path / f"{family}{j}", lambda k, t: t + 0.02 * torch.randn(t.shape, generator=g)
                           if t.is_floating_point() else t))
    return base.path, out


@pytest.mark.parametrize("family", ["bert", "hubert"])
@pytest.mark.parametrize("method,params", [("linear", {}), ("task-arithmetic", {"lambda": 0.7}), ("ties", {}),
                                           ("dare-linear", {"seed": 3}), ("dare-ties", {"seed": 3}), ("slerp", {"t": 0.3})])
def test_runner_hands_each_method_the_right_tensors(tiny_dir, tmp_path, family, method, params):
    """Every merged tensor is the method's combine of the models' (and the base's) tensors, in config
    order; the runner adds nothing (the methods' formulas are tested on their own)."""
    from surgeon.merging.methods import make_params
    from surgeon.merging.methods import method as lookup
    from surgeon.merging.tasks import TensorTask

    module = lookup(method)
    n = 2 if method == "slerp" else 3
    base, models = variants(tiny_dir, tmp_path, family, n)
    spec = [{"ref": m, "weight": w, "density": d} if module.USES_DENSITY else {"ref": m, "weight": w}
            for m, w, d in zip(models, (0.5, 0.3, 0.2), (0.7, 0.5, 0.9))]
    if not module.USES_WEIGHT:
        spec = [{"ref": m} for m in models]
    cfg = write_config(tmp_path / "m.toml", method, spec, base=base if module.NEEDS_BASE else None,
                       roles=["q", "k", "v", "o"], parameters=params)
    assert cli("merge", cfg, "--out", tmp_path / "out") == 0
    out, b = Checkpoint.open(tmp_path / "out"), Checkpoint.open(base)
    cks = [Checkpoint.open(m) for m in models]
    layout = b if module.NEEDS_BASE else cks[0]
    p = make_params(method, params)
    merged = 0
    for k in out.keys():
        parsed = layout.family.parse(k, layout.scheme)
        if parsed and parsed[2] in ("q", "k", "v", "o") and parsed[3] in ("weight", "bias"):
            task = TensorTask(k, tuple(c.get(k).float() for c in cks), b.get(k).float() if module.NEEDS_BASE else None,
                              tuple(m.get("weight", 1.0) for m in spec), tuple(m.get("density", 1.0) for m in spec))
            assert torch.equal(out.get(k), module.combine(task, p).to(out.get(k).dtype)), k
            merged += 1
        else:
            assert bits(out.get(k)) == bits(layout.get(k)), k
    assert merged == 2 * 4 * 2
