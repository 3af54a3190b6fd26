"""BEATs .pt checkpoints: refused unless allow_pickle, opened weights_only, the shared relative-position table
one parameter, and written back in the authors' layout bit for bit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import surgeon
from surgeon.beats.checkpoint import build, expected_shapes, load_pt, parse, save_pt
from surgeon.beats.config import BEATsConfig
from surgeon.beats.fixtures import beats_cfg, beats_state_dict, layout, write_beats_checkpoint
from surgeon.beats.model import BEATsModel
from surgeon.errors import SurgeonError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TABLE = "self_attn.relative_attention_bias.weight"


@pytest.fixture(scope="module")
def pt(tmp_path_factory):
    return write_beats_checkpoint(tmp_path_factory.mktemp("beats") / "BEATs_small.pt")


@pytest.fixture(scope="module")
def ft_pt(tmp_path_factory):
    return write_beats_checkpoint(tmp_path_factory.mktemp("beats") / "BEATs_small_ft.pt", predictor_class=5)


def raw(path):
    return torch.load(path, weights_only=True)


def one_line_error(call, *words):
    with pytest.raises(SurgeonError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


def wav(n=16_000, seed=0):
    return 0.1 * torch.randn(1, n, generator=torch.Generator().manual_seed(seed))


# -- loading ----------------------------------------------------------------------------------------
def test_refused_without_allow_pickle(pt):
    one_line_error(lambda: surgeon.load(pt), str(pt), "arbitrary code", "--allow-pickle")
    one_line_error(lambda: load_pt(pt), "arbitrary code")


def test_load_gives_the_model_with_its_labels(ft_pt):
    model = surgeon.load(ft_pt, allow_pickle=True)
    doc = raw(ft_pt)
    assert isinstance(model, BEATsModel) and not model.training
    assert model.label_dict == doc["label_dict"] and model.config.to_cfg() == doc["cfg"]
    sd = model.state_dict()
    assert list(sd) == list(doc["model"]) and all(torch.equal(sd[k], v) for k, v in doc["model"].items())
    with torch.no_grad():
        assert model(input_values=wav()).logits.shape == (1, 5)


class Planted:
    """Unpickling this runs code (it touches a file): weights_only must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_opened_weights_only(tmp_path):
    cfg = beats_cfg("small")
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"cfg": cfg, "model": beats_state_dict(cfg), "label_dict": Planted(marker)}, evil)
    one_line_error(lambda: surgeon.load(evil, allow_pickle=True), str(evil), "weights-only")
    assert not marker.exists()


def test_the_shared_table_is_one_parameter(pt):
    model = load_pt(pt, allow_pickle=True)
    cfg = raw(pt)["cfg"]
    tables = {id(layer.self_attn.relative_attention_bias.weight) for layer in model.encoder.layers}
    assert len(tables) == 1
    table_size = cfg["num_buckets"] * cfg["encoder_attention_heads"]
    listed = sum(torch.Size(shape).numel() for _, shape in layout(cfg))
    assert sum(p.numel() for p in model.parameters()) == listed - (cfg["encoder_layers"] - 1) * table_size
    assert len(model.state_dict()) == len(layout(cfg))


@pytest.mark.parametrize("classes, keys", [(None, 250), (527, 252)])
def test_base_shape_keys_and_parameters(classes, keys):
    """BEATs_iter3: 250 keys, 90,311,792 parameters counted once (the table listed 12 times); on the meta
    device, so no memory is used."""
    cfg = beats_cfg("base", classes)
    shapes = expected_shapes(BEATsConfig.from_cfg(cfg))
    assert list(shapes.items()) == layout(cfg) and len(shapes) == keys
    with torch.device("meta"):
        model = BEATsModel(BEATsConfig.from_cfg(cfg))
    head = 527 * 768 + 527 if classes else 0
    assert sum(p.numel() for p in model.parameters()) == 90_311_792 + head


def test_tables_that_differ_are_refused(tmp_path):
    cfg = beats_cfg("small")
    state = beats_state_dict(cfg)
    state[f"encoder.layers.1.{TABLE}"] = state[f"encoder.layers.1.{TABLE}"] + 1.0
    f = tmp_path / "b.pt"
    torch.save({"cfg": cfg, "model": state}, f)
    one_line_error(lambda: load_pt(f, allow_pickle=True), "layer 1 differs", "shares one table")


def test_the_parametrisation_names_of_weight_norm(tmp_path, pt):
    doc = raw(pt)
    renamed = {k.replace("pos_conv.0.weight_g", "pos_conv.0.parametrizations.weight.original0")
                .replace("pos_conv.0.weight_v", "pos_conv.0.parametrizations.weight.original1"): v
               for k, v in doc["model"].items()}
    assert "encoder.pos_conv.0.parametrizations.weight.original0" in renamed
    f = tmp_path / "p.pt"
    torch.save({"cfg": doc["cfg"], "model": renamed}, f)
    model = load_pt(f, allow_pickle=True)
    assert set(model.state_dict()) == set(doc["model"])
    with torch.no_grad():
        assert torch.equal(model(input_values=wav()).last_hidden_state,
                           load_pt(pt, allow_pickle=True)(input_values=wav()).last_hidden_state)


def test_a_conv_saved_without_weight_norm(tmp_path, pt):
    doc = raw(pt)
    state = dict(doc["model"])
    g, v = state.pop("encoder.pos_conv.0.weight_g"), state.pop("encoder.pos_conv.0.weight_v")
    state["encoder.pos_conv.0.weight"] = g * v / v.norm(dim=(0, 1), keepdim=True)
    f = tmp_path / "w.pt"
    torch.save({"cfg": doc["cfg"], "model": state}, f)
    with torch.no_grad():
        got = load_pt(f, allow_pickle=True)(input_values=wav()).last_hidden_state
        want = load_pt(pt, allow_pickle=True)(input_values=wav()).last_hidden_state
    assert (got - want).abs().max() < 1e-5


def test_without_cfg_the_keys_tell(tmp_path):
    told = write_beats_checkpoint(tmp_path / "cfg.pt", max_distance=800)
    bare = write_beats_checkpoint(tmp_path / "bare.pt", max_distance=800, with_cfg=False)
    assert set(raw(bare)) == set(raw(told)["model"])
    with torch.no_grad():
        a = load_pt(told, allow_pickle=True)(input_values=wav()).last_hidden_state
        b = load_pt(bare, allow_pickle=True)(input_values=wav()).last_hidden_state
    assert torch.equal(a, b)


def _saved(tmp_path, name, change, cfg_change=None):
    cfg = beats_cfg("small", 5)
    state = beats_state_dict(cfg)
    change(state)
    f = tmp_path / name
    torch.save({"cfg": {**cfg, **(cfg_change or {})}, "model": state}, f)
    return f


@pytest.mark.parametrize("change, cfg_change, words", [
    (lambda s: s.pop("encoder.layers.1.fc2.weight"), None, "no 'encoder.layers.1.fc2.weight'"),
    (lambda s: s.update(extra=torch.zeros(1)), None, "'extra' has no place"),
    (lambda s: s.update({"encoder.layers.0.fc1.weight": torch.zeros(3, 3)}), None, "has shape [3, 3]"),
    (lambda s: None, {"finetuned_model": False}, "cfg says finetuned_model is false"),
    (lambda s: s.update({"layer_norm.bias": [0.0]}), None, "is a list, not a tensor"),
    (lambda s: s.update({"layer_norm.bias": torch.zeros(24, dtype=torch.long)}), None, "not a float tensor"),
    (lambda s: None, {"encoder_attention_heads": 3}, "not divisible"),
])
def test_bad_checkpoints_give_one_line_errors(tmp_path, change, cfg_change, words):
    f = _saved(tmp_path, "bad.pt", change, cfg_change)
    one_line_error(lambda: surgeon.load(f, allow_pickle=True), str(f), words)


def test_a_pickle_that_is_not_beats(tmp_path):
    f = tmp_path / "other.bin"
    torch.save({"encoder.layer.0.attention.attention.query.weight": torch.zeros(2, 2)}, f)
    one_line_error(lambda: surgeon.load(f, allow_pickle=True), "not a BEATs checkpoint")
    f2 = tmp_path / "labels.pt"
    cfg = beats_cfg("small")
    torch.save({"cfg": cfg, "model": beats_state_dict(cfg), "label_dict": ["a"]}, f2)
    one_line_error(lambda: surgeon.load(f2, allow_pickle=True), "label_dict is a list")


# -- writing ----------------------------------------------------------------------------------------
def bytes_of(t):
    return t.contiguous().view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("which", ["pt", "ft_pt"])
def test_written_back_bit_for_bit(which, request, tmp_path):
    src = request.getfixturevalue(which)
    out = save_pt(load_pt(src, allow_pickle=True), tmp_path / "again.pt")
    a, b = raw(src), raw(out)
    assert set(b) == set(a) and b["cfg"] == a["cfg"] and b.get("label_dict") == a.get("label_dict")
    assert list(b["model"]) == list(a["model"])
    for k, t in a["model"].items():
        assert b["model"][k].dtype == t.dtype and b["model"][k].shape == t.shape and bytes_of(b["model"][k]) == bytes_of(t)
    tables = {b["model"][k].untyped_storage().data_ptr() for k in b["model"] if k.endswith(TABLE)}
    assert len(tables) == 1  # stored once, as in the authors' files


def test_an_inferred_cfg_is_written_in_full(tmp_path):
    bare = write_beats_checkpoint(tmp_path / "bare.pt", with_cfg=False)
    out = save_pt(load_pt(bare, allow_pickle=True), tmp_path / "out.pt")
    cfg = raw(out)["cfg"]
    assert cfg["encoder_layers"] == 2 and cfg["deep_norm"] is True and BEATsConfig.from_cfg(cfg).cfg == cfg


def test_saving_is_safe(tmp_path, pt):
    model = load_pt(pt, allow_pickle=True)
    out = save_pt(model, tmp_path / "a.pt")
    one_line_error(lambda: save_pt(model, out), "exists", "--force")
    save_pt(model, out, force=True)
    one_line_error(lambda: save_pt(model, pt, force=True, inputs=[pt]), "overwrite the input")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]  # no temporary left behind


def test_saving_refuses_what_the_layout_has_no_place_for(tmp_path, ft_pt):
    model = load_pt(ft_pt, allow_pickle=True)
    model.encoder.layers[0].fc1.add_module("surgeon_lora", torch.nn.Linear(2, 2))
    one_line_error(lambda: save_pt(model, tmp_path / "x.pt"), "no place for", "strip")
    model = load_pt(ft_pt, allow_pickle=True)
    model.predictor = torch.nn.Linear(32, 3)  # a new head that the cfg does not describe
    one_line_error(lambda: save_pt(model, tmp_path / "y.pt"), "'predictor.weight' has shape [3, 32]")
    assert not list(tmp_path.iterdir())


def test_a_changed_setting_is_written_into_the_cfg(tmp_path, ft_pt):
    """A new 3-class head, told to the config: the saved cfg says 3, everything else as read."""
    import dataclasses

    model = load_pt(ft_pt, allow_pickle=True)
    model.predictor = torch.nn.Linear(32, 3)
    model.config = dataclasses.replace(model.config, predictor_class=3)
    cfg = raw(save_pt(model, tmp_path / "new-head.pt"))["cfg"]
    assert cfg == {**raw(ft_pt)["cfg"], "predictor_class": 3}


def test_build_keeps_the_tensors_it_is_given():
    """No copy and no dtype change: a half-precision checkpoint stays half precision."""
    cfg = beats_cfg("small")
    state = {k: v.half() for k, v in beats_state_dict(cfg).items()}
    model = build(parse({"cfg": cfg, "model": state}, Path("h.pt")))
    assert model.encoder.layers[0].fc1.weight.dtype == torch.float16
    assert model.encoder.layers[0].fc1.weight.data_ptr() == state["encoder.layers.0.fc1.weight"].data_ptr()
    assert all(p.requires_grad for p in model.parameters())
