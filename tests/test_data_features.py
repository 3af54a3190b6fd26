"""Features: the papers' fbank, audio reading, the on-disk cache, SpecAugment, collate."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi

from surgeon.data import AudioDataset, FeatureSpec, collate, feature_spec_for, load_index, splits_for
from surgeon.data.features import compute_features, load_audio
from surgeon.data.miniature import make_esc50
from surgeon.errors import SurgeonError


def tone(freq=1000.0, seconds=1.0, rate=16000, amp=0.5):
    t = torch.arange(int(seconds * rate)) / rate
    return amp * torch.sin(2 * math.pi * freq * t)


def test_fbank_is_the_papers_kaldi_fbank():
    wav = tone()
    x = compute_features(wav, FeatureSpec(kind="fbank", max_frames=100))
    assert x.shape == (100, 128)
    ref = kaldi.fbank(wav[None], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
                      num_mel_bins=128, dither=0.0, frame_shift=10)
    assert ref.shape == (98, 128)  # 1 + (16000 - 400) // 160 frames
    torch.testing.assert_close(x[:98], (ref + 4.2677393) / (2 * 4.5689974))
    # padded frames are zeros before normalisation
    torch.testing.assert_close(x[98:], torch.full((2, 128), 4.2677393 / (2 * 4.5689974)))
    # a 1 kHz tone peaks in the mel bin centred nearest 1 kHz (HTK mel, 20 Hz .. 8 kHz, 128 bins)
    mel = lambda f: 1127 * math.log(1 + f / 700)
    step = (mel(8000) - mel(20)) / 129
    want = min(range(128), key=lambda i: abs(mel(20) + (i + 1) * step - mel(1000)))
    assert int(x[50].argmax()) == want


def test_fbank_cuts_long_input():
    x = compute_features(tone(seconds=3.0), FeatureSpec(max_frames=100))
    assert x.shape == (100, 128)
    full = compute_features(tone(seconds=3.0), FeatureSpec(max_frames=298))
    torch.testing.assert_close(x, full[:100])


def test_resample_44k1_stereo_to_16k_mono(tmp_path):
    rate = 44100
    t = np.arange(rate // 2) / rate
    s = np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "a.wav", np.stack([0.2 * s, 0.6 * s], axis=1).astype(np.float32), rate, subtype="FLOAT")
    wav = load_audio(tmp_path / "a.wav")
    assert wav.dim() == 1 and wav.shape[0] == 8000
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) <= 2
    # mono is the mean of the channels: amplitude 0.4
    assert abs(float(wav[1000:7000].abs().max()) - 0.4) < 0.01


def test_waveform_features():
    spec = FeatureSpec(kind="waveform", max_seconds=0.5, normalize_waveform=True)
    y = compute_features(tone(seconds=0.25, amp=0.1) + 0.3, spec)
    assert y.shape == (8000,)
    assert abs(float(y[:4000].mean())) < 1e-4 and abs(float(y[:4000].std()) - 1) < 1e-3
    assert torch.all(y[4000:] == 0)


def test_feature_spec_for_families():
    ast = feature_spec_for({"max_length": 400, "num_mel_bins": 128}, "ast")
    assert (ast.kind, ast.max_frames, ast.num_mel_bins) == ("fbank", 400, 128)
    assert feature_spec_for({"max_length": 1024}, "ast", max_frames=500, freq_mask=24).max_frames == 500
    w = feature_spec_for({"feat_extract_norm": "group"}, "wav2vec2")
    assert w.kind == "waveform" and w.normalize_waveform is False
    assert feature_spec_for({"feat_extract_norm": "layer"}, "hubert").normalize_waveform is True
    assert feature_spec_for({}, "wav2vec2", preprocessor_config={"do_normalize": True}).normalize_waveform
    with pytest.raises(SurgeonError, match="unknown setting 'max_frame'"):
        feature_spec_for({}, "ast", max_frame=3)
    with pytest.raises(SurgeonError, match="no audio features for family 'bert'"):
        feature_spec_for({}, "bert")


def test_cache_key_covers_feature_settings_only():
    base = FeatureSpec(max_frames=100)
    assert base.cache_key() == FeatureSpec(max_frames=100, freq_mask=24, time_mask=80).cache_key()
    assert base.cache_key() != FeatureSpec(max_frames=101).cache_key()
    assert base.cache_key() != FeatureSpec(max_frames=100, num_mel_bins=64).cache_key()
    assert base.cache_key() != FeatureSpec(kind="waveform").cache_key()


@pytest.fixture
def esc(tmp_path):
    idx = load_index("esc50", make_esc50(tmp_path / "esc", classes=2, per_fold=1))
    return idx, splits_for(idx, fold=5)[0].train


def test_cache_hit_on_second_pass_and_invalidated(esc, tmp_path):
    _, items = esc
    cache = tmp_path / "cache"
    spec = FeatureSpec(max_frames=50)
    first = AudioDataset(items, spec, cache)
    xs = [first[i]["input_values"] for i in range(len(first))]
    assert (first.cache_hits, first.cache_misses) == (0, len(items))
    again = AudioDataset(items, spec, cache)  # a later epoch or run: read from disk
    batch = collate([again[i] for i in range(len(again))])
    assert (again.cache_hits, again.cache_misses) == (len(items), 0) and batch["cache_hits"] == len(items)
    torch.testing.assert_close(batch["input_values"], torch.stack(xs))
    changed = AudioDataset(items, FeatureSpec(max_frames=60), cache)  # a feature setting changed
    assert changed[0]["input_values"].shape == (60, 128)
    assert (changed.cache_hits, changed.cache_misses) == (0, 1)
    augmented = AudioDataset(items, FeatureSpec(max_frames=50, time_mask=10), cache, train=True)
    augmented[0]  # SpecAugment is applied after the cache: still a hit
    assert augmented.cache_hits == 1
    os.utime(items[0].path, ns=(0, 1_000_000_000))  # the file changed on disk
    edited = AudioDataset(items, spec, cache)
    edited[0], edited[1]
    assert (edited.cache_hits, edited.cache_misses) == (1, 1)


def test_cache_for_synthetic_items_follows_the_source(tmp_path):
    a = load_index("synthetic", None, num_classes=2, per_class=3, seconds=0.3, seed=0)
    b = load_index("synthetic", None, num_classes=2, per_class=3, seconds=0.3, seed=1)
    spec = FeatureSpec(max_frames=30)
    for idx, hits in ((a, 0), (a, 1), (b, 0)):
        ds = AudioDataset(idx.items, spec, tmp_path, synthetic=idx.synthetic)
        ds[0]
        assert ds.cache_hits == hits


def test_spec_augment_training_only_and_reproducible(esc):
    _, items = esc
    spec = FeatureSpec(max_frames=100, freq_mask=24, time_mask=40)
    train = AudioDataset(items, spec, None, train=True, seed=0)
    evaluation = AudioDataset(items, spec, None, train=False)
    clean = evaluation[0]["input_values"]
    masked = train[0]["input_values"]
    assert not torch.equal(masked, clean) and torch.all((masked == clean) | (masked == 0))
    torch.testing.assert_close(AudioDataset(items, spec, None, train=True, seed=0)[0]["input_values"], masked)
    train.set_epoch(1)
    assert not torch.equal(train[0]["input_values"], masked)


def test_collate_pads_waveforms_with_a_mask():
    batch = collate([
        {"input_values": torch.ones(5), "labels": 1, "key": "a", "text": "hi"},
        {"input_values": torch.ones(3), "labels": 0, "key": "b", "text": "yo"},
        {"skipped": "c", "error": "c: cannot read audio"},
    ])
    assert batch["input_values"].shape == (2, 5) and batch["labels"].tolist() == [1, 0]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["keys"] == ["a", "b"] and batch["skipped"] == ["c"] and batch["text"] == ["hi", "yo"]
