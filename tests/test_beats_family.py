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
