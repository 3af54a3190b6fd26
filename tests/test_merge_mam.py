"""Multimodal Attention Merging (paper 003) on tiny models of every source -> target family pair."""
from __future__ import annotations

import json

import pytest
import torch

from surgeon.io.checkpoint import Checkpoint
from surgeon.merging.mam import METADATA_KEY, RECORD_FILE

PAIRS = [("bert", "hubert"), ("bert", "wav2vec2"), ("bert", "ast"), ("vit", "ast"), ("vit", "hubert"), ("vit", "wav2vec2")]
QKV = ("q", "k", "v")


def cli(*args) -> int:
    from surgeon_cli.main import run

    with pytest.raises(SystemExit) as e:
        run([str(a) for a in args])
    return e.value.code


def bits(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def qkv_keys(ckpt: Checkpoint, layer: int):
    """(role, leaf, key) of the merged tensors of a layer."""
    return [(r, leaf, ckpt.role_key(layer, r, leaf)) for r in QKV for leaf in ("weight", "bias")]


def merge(tmp_path, source, target, *extra, name="out"):
    out = tmp_path / name
    assert cli("merge", "--source", source, "--target", target, "--out", out, *extra) == 0
    return Checkpoint.open(out)


@pytest.mark.parametrize("src_family,tgt_family", PAIRS)
def test_lam0_is_target_bit_for_bit_and_lam1_is_source_qkv(tiny_dir, tmp_path, src_family, tgt_family):
    src, tgt = Checkpoint.open(tiny_dir(src_family)), Checkpoint.open(tiny_dir(tgt_family))
    out0 = merge(tmp_path, src.path, tgt.path, "--lam", "0", name="lam0")
    assert list(out0.keys()) == list(tgt.keys())
    for k in tgt.keys():
        assert bits(out0.get(k)) == bits(tgt.get(k)), k

    out1 = merge(tmp_path, src.path, tgt.path, "--lam", "1", name="lam1")
    merged = set()
    for i in range(tgt.dims["num_layers"]):
        for role, leaf, key in qkv_keys(tgt, i):
            assert bits(out1.get(key)) == bits(src.get(src.role_key(i, role, leaf))), key
            merged.add(key)
    for k in tgt.keys():
        if k not in merged:
            assert bits(out1.get(k)) == bits(tgt.get(k)), k


@pytest.mark.parametrize("src_family,tgt_family", PAIRS)
def test_merged_model_loads_as_target_class_and_runs(tiny_dir, tmp_path, src_family, tgt_family):
    from surgeon.hf import load_pretrained
    from surgeon.merging.verify import probe_input

    out = merge(tmp_path, tiny_dir(src_family), tiny_dir(tgt_family), "--lam", "0.1")
    target = load_pretrained(tiny_dir(tgt_family))
    model = load_pretrained(out.path)
    assert type(model) is type(target)
    x = probe_input(model.config, out.family)
    with torch.no_grad():
        y, y_t = model(**x)[0], target(**x)[0]
    assert y.shape == y_t.shape and torch.isfinite(y).all()
    assert not torch.equal(y, y_t)  # the attention did change


def test_random_lam_per_layer_matches_formula(tiny_dir, tmp_path):
    src, tgt = Checkpoint.open(tiny_dir("bert", num_hidden_layers=4)), Checkpoint.open(tiny_dir("hubert", num_hidden_layers=4))
    lams = torch.rand(4, generator=torch.Generator().manual_seed(1)).tolist()
    out = merge(tmp_path, src.path, tgt.path, "--lam", ",".join(f"{x:.6f}" for x in lams))
    for i, lam in enumerate(lams):
        lam = float(f"{lam:.6f}")
        for role, leaf, key in qkv_keys(tgt, i):
            expected = lam * src.get(src.role_key(i, role, leaf)) + (1 - lam) * tgt.get(key)
            torch.testing.assert_close(out.get(key), expected, atol=1e-6, rtol=0)


def test_only_chosen_layers_change(tiny_dir, tmp_path):
    src, tgt = Checkpoint.open(tiny_dir("vit", num_hidden_layers=4)), Checkpoint.open(tiny_dir("ast", num_hidden_layers=4))
    out = merge(tmp_path, src.path, tgt.path, "--lam", "0.5", "--layers", "1-2")
    changed = {k for k in tgt.keys() if bits(out.get(k)) != bits(tgt.get(k))}
    # ViT/AST initialise biases to zero, so merged biases may stay as they were; weights must change
    assert changed <= {key for i in (1, 2) for _, _, key in qkv_keys(tgt, i)}
    assert {tgt.role_key(i, r) for i in (1, 2) for r in QKV} <= changed
    doc = json.loads((out.path / RECORD_FILE).read_text())
    assert doc["layers"] == [1, 2] and doc["lam"] == {"1": 0.5, "2": 0.5}


def test_layers_from_selection_file_and_no_bias(tiny_dir, tmp_path):
    src, tgt = Checkpoint.open(tiny_dir("bert", num_hidden_layers=4)), Checkpoint.open(tiny_dir("hubert", num_hidden_layers=4))
    sel = tmp_path / "selection.json"
    sel.write_text(json.dumps({"metric": "swd", "layers": [3, 0]}))
    out = merge(tmp_path, src.path, tgt.path, "--lam", "0.25", "--layers-from", sel, "--no-bias")
    changed = {k for k in tgt.keys() if bits(out.get(k)) != bits(tgt.get(k))}
    assert changed == {tgt.role_key(i, r) for i in (0, 3) for r in QKV}


def test_layer_map_merges_chosen_source_layers(tiny_dir, tmp_path):
    src, tgt = Checkpoint.open(tiny_dir("bert", num_hidden_layers=4)), Checkpoint.open(tiny_dir("hubert"))
    out = merge(tmp_path, src.path, tgt.path, "--lam", "1", "--layer-map", "3:0,1:1")
    for t_layer, s_layer in ((0, 3), (1, 1)):
        for role, leaf, key in qkv_keys(tgt, t_layer):
            assert bits(out.get(key)) == bits(src.get(src.role_key(s_layer, role, leaf)))


def test_source_with_in_memory_key_names(tiny_dir, tmp_path):
    """A ViT saved with transformers-5 module names still maps by role onto AST's classic names."""
    from surgeon.io.writer import save_state_dict
    from surgeon.tiny import build_tiny

    vit = build_tiny("vit")
    mem = tmp_path / "vit-memory.safetensors"
    save_state_dict(tmp_path, {k: v.contiguous() for k, v in vit.state_dict().items()}, filename=mem.name)
    src = Checkpoint.open(mem)
    assert src.scheme == "memory"
    tgt = Checkpoint.open(tiny_dir("ast"))
    out = merge(tmp_path, mem, tgt.path, "--lam", "1")
    q = out.get(tgt.role_key(1, "q"))
    assert torch.equal(q, vit.get_submodule("vit.layers.1.attention.q_proj").weight.detach())


def test_dtype_provenance_and_sibling_files(tiny_dir, tmp_path):
    tgt = Checkpoint.open(tiny_dir("hubert"))
    (tmp_path / "tgt").mkdir()
    for f in list(tgt.path.iterdir()):
        (tmp_path / "tgt" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "tgt" / "preprocessor_config.json").write_text('{"sampling_rate": 16000}')
    out = merge(tmp_path, tiny_dir("bert"), tmp_path / "tgt", "--lam", "0.1", "--dtype", "float16")
    assert (out.path / "preprocessor_config.json").read_text() == '{"sampling_rate": 16000}'
    assert {i.dtype for i in out.tensors.values()} == {"F16"}
    assert json.loads((out.path / "config.json").read_text()).get("dtype", "float16") == "float16"
    record = json.loads(out.metadata[METADATA_KEY])
    assert record == json.loads((out.path / RECORD_FILE).read_text())
    assert record["method"] == "mam" and record["lam"] == {"0": 0.1, "1": 0.1} and record["surgeon_version"]
    assert record["source"]["family"] == "bert" and record["target"]["family"] == "hubert"
    key = tgt.role_key(0, "ffn_in")
    assert torch.equal(out.get(key), tgt.get(key).half())


def test_bfloat16_target_is_combined_in_float32_and_cast_once(tiny_dir, tmp_path):
    """numpy has no bfloat16: such tensors convert through torch at the edges, with the same results."""
    from surgeon.io.writer import save_state_dict

    src, tgt = Checkpoint.open(tiny_dir("bert")), Checkpoint.open(tiny_dir("hubert"))
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    (bf16 / "config.json").write_bytes((tgt.path / "config.json").read_bytes())
    save_state_dict(bf16, {k: v.bfloat16() if v.is_floating_point() else v for k, v in tgt.state_dict().items()})
    tgt = Checkpoint.open(bf16)
    out0 = merge(tmp_path, src.path, bf16, "--lam", "0", name="lam0")
    assert all(bits(out0.get(k)) == bits(tgt.get(k)) for k in tgt.keys())
    out = merge(tmp_path, src.path, bf16, "--lam", "0.3", name="lam03")
    key, skey = tgt.role_key(1, "k"), src.role_key(1, "k")
    expected = (0.3 * src.get(skey) + 0.7 * tgt.get(key).float()).bfloat16()
    assert out.info(key).dtype == "BF16"
    torch.testing.assert_close(out.get(key).float(), expected.float(), atol=1e-2, rtol=0)
    assert (out.get(key) != expected).float().mean() < 0.02  # the same rounding, except at rare ties


def test_dry_run_prints_plan_and_writes_nothing(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli("merge", "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.1",
               "--layers", "1", "--out", out, "--dry-run", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert doc["layers"] == [1] and doc["num_merged"] == 6 and doc["output_bytes"] > 0
    assert all(".layers.1.attention." in k for k in doc["merged_tensors"])


# -- noise baselines (paper 003, Table 1) ---------------------------------------------------------

def _stats(t):
    t = t.double()
    return t.mean().item(), t.var(correction=0).item()


@pytest.mark.parametrize("kind", ["source", "target", "normal"])
def test_noise_baselines_have_requested_mean_and_variance(tiny_dir, tmp_path, kind):
    hidden = dict(hidden_size=128, num_attention_heads=2)
    src, tgt = Checkpoint.open(tiny_dir("bert", **hidden)), Checkpoint.open(tiny_dir("hubert", **hidden))
    extra = ["--noise-from", src.path] if kind == "source" else []
    out = merge(tmp_path, f"noise:{kind}", tgt.path, "--lam", "1", "--seed", "7", "--no-bias", "--noise-stats", "tensor", *extra)
    for i in range(2):
        for role in QKV:
            noise = out.get(tgt.role_key(i, role))
            ref = {"source": src.get(src.role_key(i, role)), "target": tgt.get(tgt.role_key(i, role))}.get(kind)
            mean, var = _stats(ref) if ref is not None else (0.0, 1.0)
            got_mean, got_var = _stats(noise)
            n = noise.numel()  # 16384: the sample mean is within 5 standard errors, the variance within 5%
            assert abs(got_mean - mean) < 5 * (var / n) ** 0.5
            assert abs(got_var / var - 1) < 0.05
    again = merge(tmp_path, f"noise:{kind}", tgt.path, "--lam", "1", "--seed", "7", "--no-bias", "--noise-stats", "tensor", *extra, name="again")
    other = merge(tmp_path, f"noise:{kind}", tgt.path, "--lam", "1", "--seed", "8", "--no-bias", "--noise-stats", "tensor", *extra, name="other")
    key = tgt.role_key(0, "q")
    assert torch.equal(again.get(key), out.get(key)) and not torch.equal(other.get(key), out.get(key))


def test_noise_interpolates_with_target(tiny_dir, tmp_path):
    tgt = Checkpoint.open(tiny_dir("hubert"))
    full = merge(tmp_path, "noise:normal", tgt.path, "--lam", "1", name="full")
    half = merge(tmp_path, "noise:normal", tgt.path, "--lam", "0.3", name="half")
    key = tgt.role_key(1, "v")
    torch.testing.assert_close(half.get(key), 0.3 * full.get(key) + 0.7 * tgt.get(key), atol=1e-6, rtol=0)


def test_pickled_source_needs_allow_pickle(tiny_dir, tmp_path, capsys):
    src, tgt = Checkpoint.open(tiny_dir("bert")), Checkpoint.open(tiny_dir("hubert"))
    pickled = tmp_path / "bert-bin"
    pickled.mkdir()
    (pickled / "config.json").write_bytes((src.path / "config.json").read_bytes())
    torch.save(src.state_dict(), pickled / "pytorch_model.bin")
    assert cli("merge", "--source", pickled, "--target", tgt.path, "--lam", "1", "--out", tmp_path / "out") == 2
    assert "pickle" in capsys.readouterr().err and not (tmp_path / "out").exists()
    out = merge(tmp_path, pickled, tgt.path, "--lam", "1", "--allow-pickle")
    assert bits(out.get(tgt.role_key(0, "q"))) == bits(src.get(src.role_key(0, "q")))
