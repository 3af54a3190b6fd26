"""BEATs configuration: the authors' cfg dict read and checked, or inferred from a state dict's shapes."""
from __future__ import annotations

import pytest

from surgeon.beats.config import BEATsConfig
from surgeon.beats.fixtures import beats_cfg, layout
from surgeon.errors import SurgeonError


def test_fields_left_out_take_the_authors_defaults():
    cfg = {k: v for k, v in beats_cfg("small").items() if k != "max_distance"}
    config = BEATsConfig.from_cfg(cfg)
    assert config.max_distance == 1280  # the authors' class default, not the published 800
    assert config.encoder_layers == 2 and config.deep_norm is True


def test_the_cfg_is_written_back_as_read_unknown_fields_included():
    cfg = {**beats_cfg("small"), "some_future_field": [1, 2]}
    assert BEATsConfig.from_cfg(cfg).to_cfg() == cfg


def test_deep_norm_alpha():
    assert BEATsConfig.from_cfg(beats_cfg("base")).deep_norm_alpha == pytest.approx(24 ** 0.25)  # 2.213
    assert BEATsConfig.from_cfg(beats_cfg("base", deep_norm=False)).deep_norm_alpha == 1.0


@pytest.mark.parametrize("change, words", [
    (dict(encoder_attention_heads=5), "not divisible by encoder_attention_heads 5"),
    (dict(conv_pos_groups=3), "not divisible by conv_pos_groups 3"),
    (dict(activation_fn="glu"), "activation_fn 'glu' is not supported"),
    (dict(activation_fn="gelu_acurate"), "did you mean 'gelu_accurate'"),
    (dict(input_patch_size=-1), "input_patch_size must divide the 128 mel bins"),
    (dict(input_patch_size=12), "input_patch_size must divide the 128 mel bins"),
    (dict(encoder_layers="12"), "cfg.encoder_layers must be an integer"),
    (dict(encoder_layers=True), "cfg.encoder_layers must be an integer"),
    (dict(encoder_layers=0), "cfg.encoder_layers must be at least 1"),
    (dict(dropout=1.5), "cfg.dropout must be in [0, 1)"),
    (dict(deep_norm="yes"), "cfg.deep_norm must be true or false"),
    (dict(layer_norm_first=True), "both deep_norm and layer_norm_first"),
    (dict(max_distance=8), "max_distance 8 must exceed num_buckets / 4"),
])
def test_bad_settings_give_one_line_errors(change, words):
    with pytest.raises(SurgeonError) as e:
        BEATsConfig.from_cfg(beats_cfg("small", **change), source="x.pt")
    assert words in str(e.value) and str(e.value).startswith("x.pt: ") and "\n" not in str(e.value)


def test_a_cfg_that_is_not_a_dict():
    with pytest.raises(SurgeonError, match="cfg is a list"):
        BEATsConfig.from_cfg([1, 2])


def test_integers_are_taken_for_float_settings():
    assert BEATsConfig.from_cfg(beats_cfg("small", dropout=0)).dropout == 0.0


@pytest.mark.parametrize("shape, classes", [("small", None), ("small", 5), ("base", None), ("base", 527)])
def test_inferred_from_the_keys_equals_the_cfg(shape, classes):
    cfg = beats_cfg(shape, classes)
    inferred = BEATsConfig.infer(dict(layout(cfg)))
    told = BEATsConfig.from_cfg(cfg)
    shape_fields = ("input_patch_size", "embed_dim", "conv_bias", "encoder_layers", "encoder_embed_dim",
                    "encoder_ffn_embed_dim", "encoder_attention_heads", "conv_pos", "conv_pos_groups",
                    "relative_position_embedding", "num_buckets", "gru_rel_pos", "finetuned_model")
    assert {f: getattr(inferred, f) for f in shape_fields} == {f: getattr(told, f) for f in shape_fields}
    if classes:
        assert inferred.predictor_class == classes
    # what no shape tells takes the published checkpoints' values
    assert (inferred.deep_norm, inferred.max_distance, inferred.layer_norm_first) == (True, 800, False)
    assert inferred.cfg is None and inferred.to_cfg() == inferred.settings()


def test_heads_from_the_table_when_there_is_no_gate():
    cfg = beats_cfg("small", gru_rel_pos=False, encoder_attention_heads=4)
    assert BEATsConfig.infer(dict(layout(cfg))).encoder_attention_heads == 4


def test_inference_refuses_what_it_cannot_tell():
    cfg = beats_cfg("small", gru_rel_pos=False, relative_position_embedding=False)
    with pytest.raises(SurgeonError, match="number of attention heads"):
        BEATsConfig.infer(dict(layout(cfg)), source="x.pt")
    with pytest.raises(SurgeonError, match="no encoder.layers.N keys"):
        BEATsConfig.infer({"patch_embedding.weight": (1,)}, source="x.pt")


def test_to_dict_names_the_model_type():
    d = BEATsConfig.from_cfg(beats_cfg("small")).to_dict()
    assert d["model_type"] == "beats" and d["encoder_embed_dim"] == 32
