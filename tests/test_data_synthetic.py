"""The synthetic dataset: deterministic, varied per item, and separable in the fbank the models see."""
from __future__ import annotations

import numpy as np
import torch

from surgeon.data import AudioDataset, FeatureSpec, collate, load_index, splits_for
from surgeon.data.synthetic import KINDS, SyntheticSource


def test_deterministic_per_seed_and_varied_per_item():
    a, b, c = SyntheticSource(seed=0), SyntheticSource(seed=0), SyntheticSource(seed=1)
    np.testing.assert_array_equal(a.render_one(2, 5), b.render_one(2, 5))
    assert not np.array_equal(a.render_one(2, 5), c.render_one(2, 5))
    assert not np.array_equal(a.render_one(2, 5), a.render_one(2, 6))
    wav = a.render_one(0, 0)
    assert wav.dtype == np.float32 and wav.shape == (16000,) and np.abs(wav).max() <= 1.0


def test_each_class_has_its_own_kind_and_frequency():
    src = SyntheticSource(num_classes=8)
    assert len(set(src.classes)) == 8
    assert [name.split("_")[0] for name in src.classes[:4]] == list(KINDS)
    for c in (0, 1, 4, 5):  # tones and chirps: the spectral peak sits at the class frequency (chirps: up to 1.5x)
        spectrum = np.abs(np.fft.rfft(src.render_one(c, 0)))
        peak = np.argmax(spectrum) * 16000 / 16000
        f = src.class_frequency(c)
        assert 0.9 * f <= peak <= 1.6 * f


def test_classes_separable_by_nearest_centroid():
    """A proxy for 'a tiny AST learns it within a minute': the mean fbank over time of the test clips is
    closest to its own class's training centroid."""
    idx = load_index("synthetic", None, num_classes=6, per_class=10, seconds=0.5)
    split = splits_for(idx)[0]
    spec = FeatureSpec(max_frames=48)

    def feats(items):
        batch = collate([AudioDataset(items, spec, None, synthetic=idx.synthetic)[i] for i in range(len(items))])
        return batch["input_values"].mean(1), batch["labels"]

    x, y = feats(split.train)
    centroids = torch.stack([x[y == c].mean(0) for c in range(6)])
    xt, yt = feats(split.test)
    predicted = torch.cdist(xt, centroids).argmin(1)
    assert (predicted == yt).float().mean() == 1.0
