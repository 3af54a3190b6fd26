"""BEATs in the anatomy: the family record, detection from the authors' .pt keys, inspect (dimensions from
cfg or keys, the shared relative-position table counted once), and MAM from ViT into a .pt target."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from surgeon.anatomy import FAMILIES, LINEAR_ROLES, NORM_ROLES, family_from_keys
from surgeon.beats.fixtures import beats_cfg, build_tiny, layout, write_beats_checkpoint
from surgeon.io.checkpoint import Checkpoint
from surgeon.io.safetensors_header import TensorInfo

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BEATS = FAMILIES["beats"]


@pytest.fixture(scope="module")
def pt(tmp_path_factory):
    return write_beats_checkpoint(tmp_path_factory.mktemp("beats") / "BEATs_small.pt")


@pytest.fixture(scope="module")
def ft_pt(tmp_path_factory):
    return write_beats_checkpoint(tmp_path_factory.mktemp("beats") / "BEATs_small_ft.pt", predictor_class=5)


def header_only(cfg: dict, path="BEATs_iter3.pt") -> Checkpoint:
    """A Checkpoint of the authors' layout for `cfg` from shapes alone (no tensor data: any size is free)."""
    infos = {k: TensorInfo(k, "F32", shape, Path(path), 0, 4 * int(torch.Size(shape).numel()))
             for k, shape in layout(cfg)}
    return Checkpoint(Path(path), "pickle", [], infos, {}, cfg)


# -- the record -------------------------------------------------------------------------------------
def test_every_role_names_a_module_of_the_model_in_both_schemes():
    model = build_tiny()
    modules = dict(model.named_modules())
    for scheme in ("disk", "memory"):
        for role in BEATS.naming(scheme).roles:
            for i in range(model.config.encoder_layers):
                assert BEATS.key(i, role, None, scheme=scheme) in modules, (scheme, role, i)
    keys = model.state_dict().keys()
    for i in range(2):
        for role in LINEAR_ROLES + NORM_ROLES:
            assert BEATS.key(i, role) in keys
    assert not BEATS.is_pre_norm(beats_cfg()) and BEATS.is_pre_norm({"layer_norm_first": True})
    assert BEATS.dims(beats_cfg()) == dict(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64)


def test_detected_from_the_authors_keys_and_not_confused_with_whisper(tiny_dir):
    keys = [k for k, _ in layout(beats_cfg("base"))]
    assert family_from_keys(keys).name == "beats"
    assert family_from_keys([k for k, _ in layout(beats_cfg("small", 5))]).name == "beats"
    # Whisper's encoder layers have the same names; its conv front end tells it apart, both ways
    whisper = Checkpoint.open(tiny_dir("whisper"))
    assert family_from_keys(whisper.keys()).name == "whisper"


def test_the_shared_table_counts_once_at_the_real_shapes():
    ckpt = header_only(beats_cfg("base"))
    assert ckpt.family.name == "beats"
    assert ckpt.dims == dict(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072)
    assert len(ckpt.tensors) == 250 and len(ckpt.tied_repeats) == 11
    assert ckpt.num_parameters == 90_311_792
    assert ckpt.size_bytes == 4 * 90_311_792


def test_without_cfg_the_dimensions_come_from_the_keys():
    ckpt = header_only(beats_cfg("base"))
    ckpt.config = None
    assert ckpt.dims["num_layers"] == 12 and ckpt.dims["hidden_size"] == 768
    assert ckpt.dims["intermediate_size"] == 3072


# -- inspect ----------------------------------------------------------------------------------------
def test_inspect_a_pt(pt, ft_pt, cli):
    r = cli("inspect", pt, "--json")
    assert r.code == 2 and "--allow-pickle" in r.err and len(r.err.strip().splitlines()) == 1
    doc = cli("inspect", pt, "--allow-pickle", "--json").json()
    assert (doc["family"], doc["modality"], doc["prefix"], doc["format"]) == ("beats", "audio", "", "pickle")
    assert (doc["num_layers"], doc["hidden_size"], doc["num_heads"], doc["intermediate_size"]) == (2, 32, 2, 64)
    model = build_tiny()
    assert doc["num_parameters"] == sum(p.numel() for p in model.parameters())  # the table once
    assert doc["tied_keys"] == 1 and doc["num_tensors"] == len(model.state_dict())
    ft = cli("inspect", ft_pt, "--allow-pickle", "--json").json()
    assert ft["num_parameters"] == doc["num_parameters"] + 5 * 32 + 5
    text = cli("inspect", pt, "--allow-pickle", "--no-tensors")
    assert text.code == 0 and "beats" in text.out and "1 repeat a shared tensor" in text.out


def test_a_bare_state_dict_pt_is_inspected_by_its_keys(tmp_path, cli):
    bare = write_beats_checkpoint(tmp_path / "bare.pt", with_cfg=False)
    doc = cli("inspect", bare, "--allow-pickle", "--json").json()
    assert doc["family"] == "beats"
    assert (doc["num_layers"], doc["hidden_size"], doc["num_heads"], doc["intermediate_size"]) == (2, 32, 2, 64)


# -- MAM: ViT -> BEATs --------------------------------------------------------------------------------
def bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().view(torch.uint8).numpy().tobytes()


VIT_ROLE = {"q": "query", "k": "key", "v": "value"}


def vit_state(tiny_dir):
    return Checkpoint.open(tiny_dir("vit")).state_dict()


def check_mam(before: dict, after: dict, vit: dict, lam: float, layers, bias: bool = True):
    assert list(after) == list(before)  # the same keys, in the authors' order
    merged = set()
    for i in layers:
        for role, name in VIT_ROLE.items():
            for leaf in ("weight", "bias") if bias else ("weight",):
                key = f"encoder.layers.{i}.self_attn.{role}_proj.{leaf}"
                src = vit[f"vit.encoder.layer.{i}.attention.attention.{name}.{leaf}"]
                want = before[key] + lam * (src - before[key])
                torch.testing.assert_close(after[key], want, rtol=0, atol=1e-6)
                merged.add(key)
    for key in before.keys() - merged:  # everything else bit for bit: table, gates, norms, front end
        assert bits(after[key]) == bits(before[key]), key


def test_merge_into_a_pt_gives_the_authors_layout(pt, ft_pt, tiny_dir, tmp_path, cli):
    vit = vit_state(tiny_dir)
    for target in (pt, ft_pt):
        out = tmp_path / f"merged-{target.name}"
        r = cli("merge", "--source", tiny_dir("vit"), "--target", target, "--allow-pickle", "--lam", "0.1",
                "--out", out)
        assert r.code == 0, r.err
        src, got = torch.load(target, weights_only=True), torch.load(out, weights_only=True)
        assert set(got) == set(src) and got["cfg"] == src["cfg"] and got.get("label_dict") == src.get("label_dict")
        check_mam(src["model"], got["model"], vit, 0.1, range(2))
        tables = [v for k, v in got["model"].items() if k.endswith("relative_attention_bias.weight")]
        assert len(tables) == 2 and tables[0].data_ptr() == tables[1].data_ptr()  # still one tensor
        import surgeon

        model = surgeon.load(out, allow_pickle=True)  # and the model loads it, the table one parameter
        assert sum(p.numel() for p in model.parameters()) == cli(
            "inspect", out, "--allow-pickle", "--json").json()["num_parameters"]


def test_merge_layer_subsets_no_bias_dtype_and_noise(pt, tiny_dir, tmp_path, cli):
    vit = vit_state(tiny_dir)
    src = torch.load(pt, weights_only=True)["model"]
    out = tmp_path / "one-layer.pt"
    assert cli("merge", "--source", tiny_dir("vit"), "--target", pt, "--allow-pickle", "--lam", "0.5",
               "--layers", "1", "--no-bias", "--out", out).code == 0
    check_mam(src, torch.load(out, weights_only=True)["model"], vit, 0.5, [1], bias=False)
    half = tmp_path / "bf16.pt"
    assert cli("merge", "--source", tiny_dir("vit"), "--target", pt, "--allow-pickle", "--lam", "0.1",
               "--dtype", "bfloat16", "--out", half).code == 0
    got = torch.load(half, weights_only=True)["model"]
    tables = [v for k, v in got.items() if k.endswith("relative_attention_bias.weight")]
    assert got["encoder.layers.0.fc1.weight"].dtype == torch.bfloat16
    assert tables[0].data_ptr() == tables[1].data_ptr()  # the cast made one table, not one per layer
    noise = tmp_path / "noise.pt"
    assert cli("merge", "--source", "noise:target", "--target", pt, "--allow-pickle", "--lam", "0.1",
               "--out", noise).code == 0
    assert not torch.equal(torch.load(noise, weights_only=True)["model"]["encoder.layers.0.self_attn.q_proj.weight"],
                           src["encoder.layers.0.self_attn.q_proj.weight"])


def test_merge_dry_run_and_refusals(pt, tiny_dir, tmp_path, cli):
    out = tmp_path / "never.pt"
    doc = cli("merge", "--source", tiny_dir("vit"), "--target", pt, "--allow-pickle", "--lam", "0.1",
              "--dry-run", "--json").json()
    assert doc["num_merged"] == 12 and doc["target"]["family"] == "beats" and not out.exists()
    r = cli("merge", "--source", tiny_dir("vit"), "--target", pt, "--lam", "0.1", "--out", out)
    assert r.code == 2 and "--allow-pickle" in r.err and not out.exists()
    r = cli("merge", "--source", tiny_dir("vit"), "--target", tiny_dir("hubert"), "--lam", "0.1", "--out", out,
            "--format", "pt")
    assert r.code == 2 and "not an authors' BEATs .pt" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("merge", "--source", tiny_dir("vit"), "--target", pt, "--allow-pickle", "--lam", "0.1", "--out", out,
            "--format", "onnx")
    assert r.code == 2 and "known: pt, safetensors" in r.err


def test_merge_as_a_safetensors_directory(ft_pt, tiny_dir, tmp_path, cli):
    import json

    import surgeon
    from safetensors import safe_open

    pt_out, dir_out = tmp_path / "m.pt", tmp_path / "m"
    base = ["--source", tiny_dir("vit"), "--target", ft_pt, "--allow-pickle", "--lam", "0.1"]
    assert cli("merge", *base, "--out", pt_out).code == 0
    assert cli("merge", *base, "--out", dir_out, "--format", "safetensors").code == 0
    config = json.loads((dir_out / "config.json").read_text())
    assert config["model_type"] == "beats" and config["encoder_layers"] == 2 and len(config["label_dict"]) == 5
    with safe_open(str(dir_out / "model.safetensors"), "pt") as f:
        stored = [k for k in f.keys() if k.endswith("relative_attention_bias.weight")]
    assert stored == ["encoder.layers.0.self_attn.relative_attention_bias.weight"]  # the table once
    from_dir, from_pt = surgeon.load(dir_out), surgeon.load(pt_out, allow_pickle=True)
    assert from_dir.label_dict == from_pt.label_dict
    a, b = from_dir.state_dict(), from_pt.state_dict()
    assert list(a) == list(b) and all(bits(a[k]) == bits(b[k]) for k in a)
    assert from_dir.encoder.layers[1].self_attn.relative_attention_bias is from_dir.encoder.layers[0].self_attn.relative_attention_bias
    doc = cli("inspect", dir_out, "--json").json()
    assert doc["family"] == "beats" and doc["num_parameters"] == sum(p.numel() for p in from_dir.parameters())


def test_save_pretrained_round_trip(tmp_path):
    import surgeon

    model = build_tiny(predictor_class=3)
    model.save_pretrained(tmp_path)
    back = surgeon.load(tmp_path)
    assert back.label_dict == model.label_dict
    a, b = model.state_dict(), back.state_dict()
    assert all(bits(a[k]) == bits(b[k]) for k in a)


def test_the_data_gives_beats_the_raw_waveform():
    from surgeon.data.features import feature_spec_for

    spec = feature_spec_for(beats_cfg(), "beats")
    assert spec.kind == "waveform" and spec.normalize_waveform is False and spec.sample_rate == 16_000


def test_mam_config_into_a_pt(pt, tiny_dir, tmp_path, cli):
    """method = "mam" in a merge config writes the authors' layout as the flags do; the pickle stays
    refused without --allow-pickle."""
    from test_merge_seam import write_config

    cfg = write_config(tmp_path / "mam.toml", "mam", [{"ref": tiny_dir("vit")}], base=pt,
                       parameters={"lam": 0.1, "layers": [1]})
    r = cli("merge", cfg, "--out", tmp_path / "refused.pt")
    assert r.code == 2 and "--allow-pickle" in r.err and not (tmp_path / "refused.pt").exists()
    r = cli("merge", cfg, "--allow-pickle", "--out", tmp_path / "merged.pt")
    assert r.code == 0, r.err
    src, got = torch.load(pt, weights_only=True), torch.load(tmp_path / "merged.pt", weights_only=True)
    check_mam(src["model"], got["model"], vit_state(tiny_dir), 0.1, [1])
