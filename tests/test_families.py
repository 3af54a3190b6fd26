"""The families beyond the papers' five, each on a tiny model built from its transformers config and
saved with save_pretrained: inspect's dimensions, a cross-modal merge through `surgeon merge` checked
element by element, layout detection of model types surgeon does not list, the family records
against transformers, and recipes that train these models with their own front end.
(Both naming schemes and detection of every family: test_anatomy.py; PETL: test_inject_backbones.py.)"""
from __future__ import annotations

import json

import pytest
import torch

from surgeon.anatomy import FAMILIES, LINEAR_ROLES
from surgeon.io.checkpoint import Checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEW = ("deit", "beit", "data2vec-vision", "dinov2", "roberta", "electra", "distilbert",
       "wavlm", "unispeech-sat", "data2vec-audio", "whisper", "beats")
QKV = ("q", "k", "v")


def bits(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("family", NEW)
def test_inspect_json_dimensions(tiny_dir, cli, family):
    from surgeon.hf import load_pretrained
    from surgeon.methods.target import Target

    path = tiny_dir(family)
    r = cli("inspect", path, "--json")
    assert r.code == 0, r.err
    doc = r.json()
    fam = FAMILIES[family]
    config = json.loads((path / "config.json").read_text())
    assert doc["family"] == family and doc["layout"] is None and doc["key_scheme"] == "disk"
    dims = fam.dims(config)
    assert (doc["num_layers"], doc["hidden_size"], doc["num_heads"], doc["intermediate_size"]) == (2, 32, 2, 64)
    assert {k: doc[k] for k in dims} == dims
    # the same dimensions in the loaded model's modules
    t = Target(load_pretrained(path))
    assert t.num_layers == 2 and t.hidden_size == 32
    assert tuple(t.module(0, "q").weight.shape) == (32, 32)
    assert tuple(t.module(1, "ffn_in").weight.shape) == (64, 32)
    assert doc["num_parameters"] == sum(v.numel() for v in Checkpoint.open(path).state_dict().values()
                                        if v.is_floating_point())


# (source, target, options): every new family on its side of a cross-modal merge. A role with a bias on
# one side only (BEiT's and data2vec-vision's keys, Whisper's keys) is merged weights only (--no-bias)
# until merging handles one-sided biases itself.
MERGES = [
    ("roberta", "hubert", ()), ("electra", "hubert", ()), ("distilbert", "wav2vec2", ()),
    ("deit", "ast", ()), ("dinov2", "ast", ()), ("beit", "hubert", ("--no-bias",)),
    ("data2vec-vision", "wav2vec2", ("--no-bias",)),
    ("bert", "wavlm", ()), ("bert", "unispeech-sat", ()), ("vit", "data2vec-audio", ()),
    ("roberta", "whisper", ("--no-bias",)), ("vit", "beats", ()),  # BEATs: its model directory here, .pt in test_beats_family
]


@pytest.mark.parametrize("source, target, options", MERGES, ids=[f"{s}-{t}" for s, t, _ in MERGES])
def test_cross_modal_merge_elementwise(tiny_dir, tmp_path, cli, source, target, options):
    lam = 0.3
    src, tgt = Checkpoint.open(tiny_dir(source)), Checkpoint.open(tiny_dir(target))
    r = cli("merge", "--source", src.path, "--target", tgt.path, "--lam", lam, "--out", tmp_path / "out", *options)
    assert r.code == 0, r.err
    out = Checkpoint.open(tmp_path / "out")
    assert list(out.keys()) == list(tgt.keys())
    merged = set()
    for i in range(2):
        for role in QKV:
            for leaf in ("weight", "bias"):
                key = tgt.role_key(i, role, leaf)
                skey = src.role_key(i, role, leaf)
                if key not in tgt or (leaf == "bias" and ("--no-bias" in options or skey not in src)):
                    continue
                want = lam * src.get(skey) + (1 - lam) * tgt.get(key)
                torch.testing.assert_close(out.get(key), want, atol=1e-6, rtol=0)
                merged.add(key)
    assert {tgt.role_key(i, r) for i in range(2) for r in QKV} <= merged
    for k in tgt.keys():  # everything else (biases included when not merged) bit for bit
        if k not in merged:
            assert bits(out.get(k)) == bits(tgt.get(k)), k
    if target == "whisper":  # the decoder is never a merge target
        assert not [k for k in merged if "decoder" in k]


# -- layout detection ---------------------------------------------------------------------------


def save_model(out, config_class, model_class, **overrides):
    import transformers

    from surgeon.hf import quiet_transformers

    quiet_transformers()
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**overrides))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def camembert(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("camembert") / "m", "CamembertConfig", "CamembertForSequenceClassification",
                      **FAMILIES["roberta"].tiny.overrides)


@pytest.fixture(scope="module")
def unispeech(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("unispeech") / "m", "UniSpeechConfig", "UniSpeechForCTC",
                      **FAMILIES["unispeech-sat"].tiny.overrides)


def test_unknown_model_type_with_a_known_layout_is_read_by_it(camembert, unispeech, cli):
    doc = cli("inspect", camembert, "--json").json()
    assert (doc["family"], doc["model_type"], doc["prefix"]) == ("roberta", "camembert", "roberta.")
    assert doc["layout"] == "layout of roberta (model_type 'camembert')"
    assert (doc["num_layers"], doc["hidden_size"]) == (2, 32)
    r = cli("inspect", camembert, "--no-tensors")
    assert r.code == 0 and "layout of roberta (model_type 'camembert')" in r.out
    doc = cli("inspect", unispeech, "--json").json()
    assert doc["layout"] == "layout of unispeech-sat (model_type 'unispeech')" and doc["prefix"] == "unispeech."


def test_a_custom_model_type_is_read_by_its_keys_layout(tiny_dir, tmp_path, cli):
    import shutil

    custom = tmp_path / "custom"
    shutil.copytree(tiny_dir("wav2vec2"), custom)
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "model_type": "my-wav2vec2"}))
    doc = cli("inspect", custom, "--json").json()
    assert doc["family"] == "wav2vec2" and doc["layout"] == "layout of wav2vec2 (model_type 'my-wav2vec2')"
    assert (doc["num_layers"], doc["hidden_size"], doc["prefix"]) == (2, 32, "wav2vec2.")


def test_layout_detected_models_merge_and_take_surgery(camembert, unispeech, tmp_path, cli):
    from surgeon.api import inject, strip
    from surgeon.hf import family_of_model, load_pretrained
    from surgeon.methods.target import Target

    r = cli("merge", "--source", camembert, "--target", unispeech, "--lam", "1", "--out", tmp_path / "m")
    assert r.code == 0, r.err
    src, tgt, out = Checkpoint.open(camembert), Checkpoint.open(unispeech), Checkpoint.open(tmp_path / "m")
    assert bits(out.get(tgt.role_key(1, "v"))) == bits(src.get(src.role_key(1, "v")))
    model = load_pretrained(unispeech)
    assert family_of_model(model).name == "unispeech-sat" and Target(model).prefix == "unispeech."
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inject(model, "lora")
    assert any("unispeech.encoder.layers.1.attention.v_proj.surgeon_lora" in n for n, _ in model.named_parameters())
    strip(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_unreadable_layout_names_the_model_type_and_the_families(tmp_path, cli):
    path = save_model(tmp_path / "gpt2", "GPT2Config", "GPT2Model", n_embd=32, n_layer=2, n_head=2, vocab_size=100,
                      n_positions=32)
    r = cli("inspect", path, "--json")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "model_type='gpt2'" in r.err and all(name in r.err for name in FAMILIES)


# -- the records against transformers --------------------------------------------------------------


# families transformers does not implement: surgeon's own model (a tiny builder), checked in their own tests
NATIVE = tuple(name for name, fam in FAMILIES.items() if fam.tiny.builder is not None)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in NATIVE])
def test_records_name_real_transformers_classes(family):
    import transformers

    fam = FAMILIES[family]
    for model_type in fam.model_types:
        assert model_type in transformers.CONFIG_MAPPING, model_type
    config_class = getattr(transformers, fam.tiny.config)
    assert config_class.model_type in fam.model_types
    for task, name in fam.tasks.items():
        cls = getattr(transformers, name)
        assert cls.config_class.model_type in fam.model_types, (task, name)
    assert set(fam.config_keys) == {"num_layers", "hidden_size", "num_heads", "intermediate_size"}
    from surgeon.frontends import FRONTENDS

    assert fam.frontend in FRONTENDS and set(fam.label_heads) <= set(fam.heads)
    assert bool(fam.tasks) == (FRONTENDS[fam.frontend].features is not None)  # audio models train
    assert set(LINEAR_ROLES) <= set(fam.disk.roles) and set(LINEAR_ROLES) <= set(fam.memory.roles)


def test_every_family_has_an_alias_and_every_alias_a_family():
    from surgeon.refs import ALIASES

    # BEATs' checkpoints are not on the Hub (the authors publish .pt files elsewhere): no alias
    assert {a.family for a in ALIASES.values()} == set(FAMILIES) - set(NATIVE)


def test_models_lists_the_new_aliases(cli):
    rows = cli("models", "--json").json()
    names = {r["alias"]: r for r in rows}
    for alias in ("roberta", "camembert", "sbert-distilbert", "deit", "beit", "dinov2", "wavlm", "data2vec-audio",
                  "unispeech", "whisper-small"):
        assert alias in names
    assert names["whisper-small"]["family"] == "whisper" and names["camembert"]["family"] == "roberta"


# -- recipes name these models, with their front end ------------------------------------------------

FRONT_ENDS = {  # family -> (task model class the recipe loads, feature kind, feature shape of a 0.25 s clip)
    "deit": ("DeiTForImageClassification", "fbank", (100, 128)),
    "beit": ("BeitForImageClassification", "fbank", (100, 128)),
    "wavlm": ("WavLMForSequenceClassification", "waveform", (4000,)),
    "data2vec-audio": ("Data2VecAudioForSequenceClassification", "waveform", (4000,)),
    "whisper": ("WhisperForAudioClassification", "logmel", (80, 100)),
}


@pytest.mark.parametrize("family", FRONT_ENDS)
def test_a_recipe_trains_a_new_backbone_on_its_features(tiny_dir, tmp_path, family):
    from surgeon.data import AudioDataset, collate, load_index
    from surgeon.recipes.load import load_recipe
    from surgeon.train.model import build_model
    from surgeon.train.runs import feature_spec
    from surgeon.train.tasks import get_task

    cls, kind, shape = FRONT_ENDS[family]
    (tmp_path / "r.toml").write_text(f"""
[model]
ref = "{tiny_dir(family)}"
[method]
name = "bottleneck"
placement = "houlsby"
[data]
format = "synthetic"
max_frames = 100
options = {{ num_classes = 3, per_class = 3, seconds = 0.25 }}
[train]
epochs = 1
batch_size = 2
""")
    recipe = load_recipe(tmp_path / "r.toml")
    index = load_index("synthetic", None, num_classes=3, per_class=3, seconds=0.25)
    model, spec, _ = build_model(recipe, index.classes, feature_spec=lambda m: feature_spec(recipe, m))
    assert type(model).__name__ == cls and spec.kind == kind
    data = AudioDataset(index.items[:2], spec, synthetic=index.synthetic)
    batch = collate([data[0], data[1]])
    assert tuple(batch["input_values"].shape[1:]) == shape
    task = get_task("classification")
    model.train()
    out = task.forward(model, batch)
    assert out.shape == (2, 3)
    task.loss(out, batch).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if ".surgeon_" in n and p.requires_grad)


def test_ast_from_imagenet_deit_keeps_its_distillation_token():
    from surgeon.tiny import build_tiny
    from surgeon.train.imagenet_init import ast_from_vit

    deit = build_tiny("deit", model_class="DeiTModel", image_size=64)  # 4 x 4 patch grid + CLS, DIST
    ast = ast_from_vit(deit, max_length=200, frequency_stride=16, time_stride=16)
    d, a = deit.state_dict(), ast.audio_spectrogram_transformer.state_dict()
    assert torch.equal(a["embeddings.distillation_token"], d["embeddings.distillation_token"])
    assert torch.equal(a["layers.1.attention.k_proj.weight"], d["layers.1.attention.k_proj.weight"])
    pos = a["embeddings.position_embeddings"]
    assert pos.shape == (1, 2 + 8 * 12, 32) and torch.equal(pos[0, :2], d["embeddings.position_embeddings"][0, :2])
    with pytest.raises(Exception, match="AST's layout"):
        ast_from_vit(build_tiny("beit", model_class="BeitModel"))


def test_whisper_log_mel_is_its_feature_extractors(tmp_path):
    """Whisper's features are WhisperFeatureExtractor's: padded to the encoder's frames, (log10 + 4) / 4."""
    import numpy as np
    from transformers import WhisperFeatureExtractor

    from surgeon.data.features import compute_features, feature_spec_for

    spec = feature_spec_for({"num_mel_bins": 80, "max_source_positions": 50}, "whisper")
    assert (spec.kind, spec.num_mel_bins, spec.max_frames) == ("logmel", 80, 100)
    wav = torch.from_numpy(np.sin(np.arange(8000) * 0.05).astype("float32"))  # half a second
    got = compute_features(wav, spec)
    want = WhisperFeatureExtractor(feature_size=80)(wav.numpy(), sampling_rate=16000, return_tensors="pt",
                                                    max_length=16000, padding="max_length").input_features[0]
    assert got.shape == (80, 100)
    torch.testing.assert_close(got, want)


# -- a family transformers does not implement (BEATs' shape): the record carries its own builder,
# loader and feature settings, and the code that uses them has no branch for it ----------------------


class _Native(torch.nn.Module):
    def __init__(self, **config):
        super().__init__()
        self.config = {"model_type": "native", **config}
        self.proj = torch.nn.Linear(4, 4)


def fake_builder(model_class=None, **config):
    return _Native(built_as=model_class, **config)


def fake_loader(path, model_class=None):
    return _Native(loaded_from=str(path))


@pytest.fixture
def native(monkeypatch, tiny_dir):
    import dataclasses

    import surgeon.anatomy as anatomy
    from surgeon.anatomy import Tiny

    fam = dataclasses.replace(FAMILIES["hubert"], name="native", model_types=("native",),
                              tiny=Tiny(None, None, {"width": 4}, builder=(__name__, "fake_builder")),
                              loader=(__name__, "fake_loader"), feature_settings={"norm_mean": 15.4, "norm_std": 6.5},
                              frontend="fbank")
    monkeypatch.setitem(anatomy.FAMILIES, "native", fam)
    return fam


def test_a_family_outside_transformers_builds_loads_and_sets_its_features(native, tmp_path):
    from surgeon.data.features import feature_spec_for
    from surgeon.hf import load_pretrained
    from surgeon.tiny import build_tiny

    model = build_tiny("native", model_class="NativeForClassification")
    assert model.config == {"model_type": "native", "width": 4, "built_as": "NativeForClassification"}
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "native"}))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, tmp_path / "ckpt" / "model.safetensors")
    assert load_pretrained(tmp_path / "ckpt").config["loaded_from"] == str(tmp_path / "ckpt")
    spec = feature_spec_for({"max_length": 100}, "native")
    assert (spec.kind, spec.norm_mean, spec.norm_std, spec.max_frames) == ("fbank", 15.4, 6.5, 100)
