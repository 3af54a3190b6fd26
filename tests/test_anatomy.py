"""The anatomy tables must describe real transformers models, in both naming schemes."""
import pytest
from safetensors import safe_open

from surgeon.anatomy import FAMILIES, LINEAR_ROLES, NORM_ROLES, detect_family, family_from_keys
from surgeon.errors import SurgeonError
from surgeon.tiny import TINY, build_tiny

# (family, transformers class[, config class]) : task models carry a prefix ("bert."), base models do not
CLASSES = [
    ("ast", "ASTForAudioClassification"), ("ast", "ASTModel"),
    ("vit", "ViTForImageClassification"), ("vit", "ViTModel"),
    ("deit", "DeiTForImageClassificationWithTeacher"), ("deit", "DeiTForImageClassification"), ("deit", "DeiTModel"),
    ("beit", "BeitForImageClassification"), ("beit", "BeitForMaskedImageModeling"), ("beit", "BeitModel"),
    ("data2vec-vision", "Data2VecVisionForImageClassification"), ("data2vec-vision", "Data2VecVisionModel"),
    ("dinov2", "Dinov2ForImageClassification"), ("dinov2", "Dinov2Model"),
    ("bert", "BertForSequenceClassification"), ("bert", "BertModel"),
    ("roberta", "RobertaForSequenceClassification"), ("roberta", "RobertaModel"),
    ("roberta", "XLMRobertaForMaskedLM", "XLMRobertaConfig"), ("roberta", "XLMRobertaModel", "XLMRobertaConfig"),
    ("electra", "ElectraForSequenceClassification"), ("electra", "ElectraModel"),
    ("distilbert", "DistilBertForSequenceClassification"), ("distilbert", "DistilBertModel"),
    ("hubert", "HubertForCTC"), ("hubert", "HubertModel"),
    ("wav2vec2", "Wav2Vec2ForSequenceClassification"), ("wav2vec2", "Wav2Vec2ForCTC"),
    ("wavlm", "WavLMForCTC"), ("wavlm", "WavLMModel"),
    ("unispeech-sat", "UniSpeechSatForCTC"), ("unispeech-sat", "UniSpeechSatModel"),
    ("data2vec-audio", "Data2VecAudioForCTC"), ("data2vec-audio", "Data2VecAudioModel"),
    ("whisper", "WhisperForConditionalGeneration"), ("whisper", "WhisperForAudioClassification"),
    ("whisper", "WhisperModel"),
]
# families whose bare base models (no prefix to name them) share one layout and key signature
SAME_BARE_LAYOUT = [{"hubert", "wav2vec2", "unispeech-sat"}, {"bert", "roberta", "electra"}, {"ast", "deit"},
                    {"beit", "data2vec-vision"}]


@pytest.fixture(scope="module", params=CLASSES, ids=lambda c: c[1])
def saved(request, tmp_path_factory):
    import transformers

    family, cls, *config_class = request.param
    if config_class:
        config = getattr(transformers, config_class[0])(**FAMILIES[family].tiny.overrides)
        model = getattr(transformers, cls)(config).eval()
    else:
        model = build_tiny(family, model_class=cls)
    out = tmp_path_factory.mktemp(cls)
    model.save_pretrained(out)
    with safe_open(out / "model.safetensors", "pt") as f:
        disk = set(f.keys())
    return family, model, disk


def memory_keys(model, disk_names):
    """The model's state-dict keys less the tied copies save_pretrained leaves out (Whisper's proj_out,
    a masked-LM decoder)."""
    groups = {}
    for k, v in model.state_dict().items():
        groups.setdefault((v.data_ptr(), tuple(v.shape)) if v.numel() else k, []).append(k)
    keys = set()
    for names in groups.values():
        saved = [k for k in names if k in disk_names]
        keys.update(saved if len(names) > 1 and saved else names)
    return keys


def test_translation_between_schemes_is_exact(saved):
    family, model, disk = saved
    fam = FAMILIES[family]
    memory = memory_keys(model, {fam.translate(k, "disk", "memory") for k in disk})
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
        for block in ("attn", "ffn"):  # the sub-layer modules the hooks attach to (or a span's two ends)
            if block in fam.memory.spans:
                layer = model.get_submodule(prefix + fam.memory.layer_path(i))
                for end in fam.memory.spans[block]:
                    layer.get_submodule(end)
            else:
                model.get_submodule(fam.key(i, block, None, scheme="memory", prefix=prefix))


def test_q_projection_shapes_follow_the_config(saved):
    family, model, disk = saved
    fam = FAMILIES[family]
    prefix = fam.prefix_in(disk, "disk")
    dims = fam.dims(model.config.to_dict())
    d = dims["hidden_size"]
    q = model.get_submodule(fam.key(0, "q", None, scheme="memory", prefix=prefix))
    f = model.get_submodule(fam.key(0, "ffn_in", None, scheme="memory", prefix=prefix))
    assert tuple(q.weight.shape) == (d, d)
    assert tuple(f.weight.shape) == (dims["intermediate_size"], d)


def test_detection_from_keys_in_both_schemes(saved):
    family, model, disk = saved
    detected = {family_from_keys(disk).name, family_from_keys(model.state_dict()).name}
    # bare encoders of one layout (HuBERT and wav2vec 2.0) look the same; the prefix tells task models apart
    allowed = {family}.union(*[group for group in SAME_BARE_LAYOUT if family in group])
    assert detected <= allowed
    if FAMILIES[family].prefix_in(disk) not in ("", None):
        assert detected == {family}
    fam = FAMILIES[family]
    assert fam.scheme_in(disk) == "disk"
    state = model.state_dict()
    scheme, prefix = fam.fit(state)  # in-memory names: whichever scheme names their q projection
    assert fam.key(1, "q", scheme=scheme, prefix=prefix) in state


def test_detection_from_config_and_unknown_architecture():
    assert detect_family({"model_type": "hubert"}).name == "hubert"
    with pytest.raises(SurgeonError, match="unknown architecture model_type='gpt2'.*surgeon knows ast, vit"):
        detect_family({"model_type": "gpt2"}, source="config.json")
    with pytest.raises(SurgeonError, match="unknown architecture"):
        family_from_keys(["transformer.h.0.attn.c_attn.weight"])


def test_norm_position_comes_from_the_table():
    assert FAMILIES["ast"].is_pre_norm({}) and not FAMILIES["bert"].is_pre_norm({})
    assert FAMILIES["hubert"].is_pre_norm({"do_stable_layer_norm": True})
    assert not FAMILIES["hubert"].is_pre_norm({"do_stable_layer_norm": False})


def test_every_family_has_a_tiny_model():
    assert set(TINY) == set(FAMILIES)
