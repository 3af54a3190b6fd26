"""The anatomy tables must describe real transformers models, in both naming schemes."""
import pytest
from safetensors import safe_open

from surgeon.anatomy import FAMILIES, LINEAR_ROLES, NORM_ROLES, detect_family, family_from_keys
from surgeon.errors import SurgeonError
from surgeon.tiny import TINY, build_tiny

# (family, transformers class) pairs: task models carry a prefix ("bert."), base models do not
CLASSES = [
    ("ast", "ASTForAudioClassification"), ("ast", "ASTModel"),
    ("vit", "ViTForImageClassification"), ("vit", "ViTModel"),
    ("bert", "BertForSequenceClassification"), ("bert", "BertModel"),
    ("hubert", "HubertForCTC"), ("hubert", "HubertModel"),
    ("wav2vec2", "Wav2Vec2ForSequenceClassification"), ("wav2vec2", "Wav2Vec2ForCTC"),
]


@pytest.fixture(scope="module", params=CLASSES, ids=lambda c: c[1])
def saved(request, tmp_path_factory):
    family, cls = request.param
    model = build_tiny(family, model_class=cls)
    out = tmp_path_factory.mktemp(cls)
    model.save_pretrained(out)
    with safe_open(out / "model.safetensors", "pt") as f:
        disk = set(f.keys())
    return family, model, disk


def test_translation_between_schemes_is_exact(saved):
    family, model, disk = saved
    fam = FAMILIES[family]
    memory = set(model.state_dict())
    assert {fam.translate(k, "memory", "disk") for k in memory} == disk
    assert {fam.translate(k, "disk", "memory") for k in disk} == memory


def test_every_role_exists_in_both_schemes(saved):
    family, model, disk = saved
    fam = FAMILIES[family]
    n = model.config.num_hidden_layers
    prefix = fam.prefix_in(disk, "disk")
    assert prefix is not None
    for i in range(n):
        for role in LINEAR_ROLES + NORM_ROLES:
            assert fam.key(i, role, "weight", prefix=prefix) in disk
            module = model.get_submodule(fam.key(i, role, None, scheme="memory", prefix=prefix))
            assert module.weight.shape == model.state_dict()[fam.key(i, role, "weight", scheme="memory", prefix=prefix)].shape
        for block in ("attn", "ffn"):  # the sub-layer modules the hooks attach to
            model.get_submodule(fam.key(i, block, None, scheme="memory", prefix=prefix))


def test_q_projection_shapes_follow_the_config(saved):
    family, model, disk = saved
    fam = FAMILIES[family]
    prefix = fam.prefix_in(disk, "disk")
    d = model.config.hidden_size
    q = model.get_submodule(fam.key(0, "q", None, scheme="memory", prefix=prefix))
    f = model.get_submodule(fam.key(0, "ffn_in", None, scheme="memory", prefix=prefix))
    assert tuple(q.weight.shape) == (d, d)
    assert tuple(f.weight.shape) == (model.config.intermediate_size, d)


def test_detection_from_keys_in_both_schemes(saved):
    family, model, disk = saved
    detected = {family_from_keys(disk).name, family_from_keys(model.state_dict()).name}
    # bare HuBERT and wav2vec 2.0 encoders share one layout; the prefix tells task models apart
    allowed = {family} | ({"hubert", "wav2vec2"} if family in ("hubert", "wav2vec2") else set())
    assert detected <= allowed
    if FAMILIES[family].prefix_in(disk) not in ("", None):
        assert detected == {family}


def test_detection_from_config_and_unknown_architecture():
    assert detect_family({"model_type": "hubert"}).name == "hubert"
    with pytest.raises(SurgeonError, match="unknown architecture model_type='gpt2'"):
        detect_family({"model_type": "gpt2"}, source="config.json")
    with pytest.raises(SurgeonError, match="unknown architecture"):
        family_from_keys(["transformer.h.0.attn.c_attn.weight"])


def test_norm_position_comes_from_the_table():
    assert FAMILIES["ast"].is_pre_norm({}) and not FAMILIES["bert"].is_pre_norm({})
    assert FAMILIES["hubert"].is_pre_norm({"do_stable_layer_norm": True})
    assert not FAMILIES["hubert"].is_pre_norm({"do_stable_layer_norm": False})


def test_every_family_has_a_tiny_model():
    assert set(TINY) == set(FAMILIES)
