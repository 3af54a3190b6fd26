"""[model] head: the papers' mean head equals a Linear over the mean of the final-LayerNorm outputs."""
from __future__ import annotations

import pytest
import torch

from surgeon.heads import set_head
from surgeon.tiny import build_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ast(**kw):
    torch.manual_seed(0)
    model = build_tiny("ast", **kw).eval()
    set_head(model, "mean")
    return model


def _fbank(model, batch=2):
    torch.manual_seed(1)
    return torch.randn(batch, model.config.max_length, model.config.num_mel_bins)


def _by_hand(model, x, *, keep=None):
    """Linear(mean over positions of LayerNorm(last layer outputs)), transcribed."""
    base = model.audio_spectrogram_transformer
    h = base.embeddings(x)
    for layer in base.encoder.layer if hasattr(base, "encoder") else base.layers:
        out = layer(h)
        h = out[0] if isinstance(out, tuple) else out
    h = base.layernorm(h)
    if keep is not None:
        h = h[:, keep]
    return model.classifier.dense(h.mean(dim=1))


def test_mean_head_equals_a_linear_over_the_mean():
    model = _ast()
    x = _fbank(model)
    with torch.no_grad():
        assert torch.allclose(model(x).logits, _by_hand(model, x), atol=1e-5)
    assert isinstance(model.classifier.layernorm, torch.nn.Identity)


def test_mean_head_trains_the_final_layernorm():
    from surgeon.api import inject

    model = _ast()
    inject(model, "lora")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "audio_spectrogram_transformer.layernorm.weight" in trainable
    assert "classifier.dense.weight" in trainable
    from surgeon.api import parameter_groups

    head = {id(p) for p in parameter_groups(model)["head"]}
    assert id(model.audio_spectrogram_transformer.layernorm.weight) in head


def test_pooled_head_is_transformers_own():
    torch.manual_seed(0)
    model = build_tiny("ast").eval()
    set_head(model, "pooled")
    assert not isinstance(model.classifier.layernorm, torch.nn.Identity)


@pytest.mark.parametrize("deep", [False, True])
def test_prompt_outputs_enter_the_mean_and_the_refilled_dist_slot_does_not(deep):
    """[CLS, P, patches] (dist = false): the mean covers CLS, the P prompt outputs and the patches."""
    from surgeon.api import inject

    model = _ast()
    inject(model, "prompt", num_tokens=3, deep=deep, dist=False)
    x = _fbank(model)
    seen = {}
    last = model.audio_spectrogram_transformer.encoder.layer[-1] if hasattr(
        model.audio_spectrogram_transformer, "encoder") else model.audio_spectrogram_transformer.layers[-1]
    # the last layer's raw output before the prompt method drops the prompts: [CLS, P, patches]
    handle = last.register_forward_hook(lambda m, a, o: seen.setdefault("h", o[0] if isinstance(o, tuple) else o),
                                        prepend=True)
    with torch.no_grad():
        logits = model(x).logits
    handle.remove()
    h = model.audio_spectrogram_transformer.layernorm(seen["h"])
    patches = model.audio_spectrogram_transformer.embeddings(x).shape[1] - 2
    assert h.shape[1] == 1 + 3 + patches  # CLS, the prompts, the patches: no DIST
    expected = model.classifier.dense(h.mean(dim=1))
    assert torch.allclose(logits, expected, atol=1e-5)


def test_prompt_with_dist_kept_pools_every_position():
    from surgeon.api import inject

    model = _ast()
    inject(model, "prompt", num_tokens=2)
    seen = {}
    base = model.audio_spectrogram_transformer
    last = base.encoder.layer[-1] if hasattr(base, "encoder") else base.layers[-1]
    handle = last.register_forward_hook(lambda m, a, o: seen.setdefault("h", o[0] if isinstance(o, tuple) else o),
                                        prepend=True)
    x = _fbank(model)
    with torch.no_grad():
        logits = model(x).logits
    handle.remove()
    expected = model.classifier.dense(base.layernorm(seen["h"]).mean(dim=1))
    assert torch.allclose(logits, expected, atol=1e-5)


def test_speech_mean_head_is_a_linear_over_the_unpadded_mean():
    torch.manual_seed(0)
    model = build_tiny("wav2vec2").eval()
    set_head(model, "mean")
    assert model.classifier.in_features == model.config.hidden_size
    torch.manual_seed(1)
    wave = torch.randn(1, 1600)
    with torch.no_grad():
        logits = model(wave).logits
        h = model.wav2vec2(wave).last_hidden_state
    assert torch.allclose(logits, model.classifier(h.mean(dim=1)), atol=1e-5)


def test_saved_surgery_keeps_the_mean_head(tmp_path, tiny_dir):
    from surgeon.api import inject, load, save_surgery
    from surgeon.hf import load_pretrained

    torch.manual_seed(0)
    model = load_pretrained(tiny_dir("ast")).eval()
    set_head(model, "mean")
    inject(model, "bitfit")
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p)
    save_surgery(model, tmp_path / "s")
    again = load(tmp_path / "s")
    x = _fbank(model)
    with torch.no_grad():
        assert torch.allclose(again(x).logits, model(x).logits, atol=1e-5)


def test_unknown_family_is_refused():
    from surgeon.errors import SurgeonError

    model = build_tiny("bert")
    with pytest.raises(SurgeonError, match="mean head is not available"):
        set_head(model, "mean")


def test_recipe_head_reaches_the_model():
    from surgeon.recipes.load import load_recipe
    from surgeon.train.model import build_model
    from surgeon.train.runs import feature_spec

    r = load_recipe("quickstart", ['model.head="mean"'])
    model, _, _ = build_model(r, ["a", "b"], feature_spec=lambda m: feature_spec(r, m))
    assert model.config.surgeon_head == "mean"
    assert isinstance(model.classifier.layernorm, torch.nn.Identity)
    assert model.audio_spectrogram_transformer.layernorm.weight.requires_grad
    r = load_recipe("quickstart")
    model, _, _ = build_model(r, ["a", "b"], feature_spec=lambda m: feature_spec(r, m))
    assert not isinstance(model.classifier.layernorm, torch.nn.Identity)


def test_mean_head_needs_classification():
    from surgeon.errors import SurgeonError
    from surgeon.recipes.load import load_recipe

    with pytest.raises(SurgeonError, match="head"):
        load_recipe("quickstart", ['model.task="ctc"', 'model.head="mean"'])


def test_export_as_a_plain_model_refuses_the_mean_head(tmp_path, tiny_dir):
    """A plain transformers class would pool differently: the export says so instead of writing wrong logits."""
    from surgeon.api import inject, save_surgery
    from surgeon.errors import SurgeonError
    from surgeon.export import export
    from surgeon.hf import load_pretrained

    model = load_pretrained(tiny_dir("ast")).eval()
    set_head(model, "mean")
    inject(model, "bitfit")
    save_surgery(model, tmp_path / "s")
    with pytest.raises(SurgeonError, match="mean head"):
        export(tmp_path / "s", tmp_path / "out", as_="model")
    assert not (tmp_path / "out").exists()
    export(tmp_path / "s", tmp_path / "surgery", as_="surgery")


def test_recipe_from_a_mean_head_surgery_keeps_it(tmp_path, tiny_dir):
    """model.surgery with no head given: the head the surgery was trained with."""
    from surgeon.api import inject, save_surgery
    from surgeon.hf import load_pretrained
    from surgeon.recipes.load import load_recipe
    from surgeon.train.model import build_model
    from surgeon.train.runs import feature_spec

    model = load_pretrained(tiny_dir("ast")).eval()
    set_head(model, "mean")
    inject(model, "bitfit")
    save_surgery(model, tmp_path / "s")
    text = (tmp_path / "r.toml")
    text.write_text(f'[model]\nsurgery = "{tmp_path / "s"}"\n\n[data]\nformat = "synthetic"\nmax_frames = 100\n'
                    '[data.options]\nnum_classes = 2\nper_class = 4\n\n[train]\nepochs = 1\nbatch_size = 2\n')
    r = load_recipe(text)
    built, _, _ = build_model(r, ["a", "b"], feature_spec=lambda m: feature_spec(r, m))
    assert built.config.surgeon_head == "mean" and isinstance(built.classifier.layernorm, torch.nn.Identity)
