"""`synthetic`: a built-in generator of labelled audio for the offline quickstart and the tests.

Class c is a family of signals: a kind (steady tone, rising chirp, band of noise, pulsed tone,
taken in turn) at a class frequency spaced logarithmically from 150 Hz to 4 kHz. Every item varies
its frequency (+-3 %), loudness, onset, length and background noise, drawn from (seed, class, n),
so the set is deterministic and a tiny AST tells the classes apart within a minute of CPU training.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from surgeon.data.types import DatasetIndex, Item
from surgeon.errors import SurgeonError

KINDS = ("tone", "chirp", "noise", "pulses")
LOW_HZ, HIGH_HZ = 150.0, 4000.0  # every signal (chirps reach 1.5x, noise 1.4x) stays below 8 kHz


MAX_SYNTHETIC_SECONDS = 600
MAX_SYNTHETIC_ITEMS = 1_000_000


@dataclass(frozen=True)
class SyntheticSource:
    num_classes: int = 5
    per_class: int = 40
    seconds: float = 1.0
    seed: int = 0
    sample_rate: int = 16000

    def class_frequency(self, c: int) -> float:
        span = max(self.num_classes - 1, 1)
        return LOW_HZ * (HIGH_HZ / LOW_HZ) ** (c / span)

    def class_name(self, c: int) -> str:
        return f"{KINDS[c % len(KINDS)]}_{round(self.class_frequency(c))}hz"

    @property
    def classes(self) -> list[str]:
        return [self.class_name(c) for c in range(self.num_classes)]

    def fingerprint(self) -> str:
        """Identifies the rendered audio in cache keys (every field changes it)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def render(self, item: Item) -> np.ndarray:
        """The waveform of `item` (float32, mono, at sample_rate)."""
        _, _, n = item.key.rsplit("/", 2)
        return self.render_one(item.label, int(n))

    def render_one(self, c: int, n: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, c, n])
        sr, length = self.sample_rate, int(round(self.seconds * self.sample_rate))
        f = self.class_frequency(c) * float(np.exp(rng.normal(0.0, 0.03)))
        onset = int(rng.uniform(0.0, 0.1) * length)
        active = max(int(rng.uniform(0.8, 0.95) * (length - onset)), 1)
        t = np.arange(active) / sr
        kind = KINDS[c % len(KINDS)]
        if kind == "tone":
            sig = np.sin(2 * np.pi * f * t)
            if 2 * f < sr / 2:  # a second harmonic where it fits below Nyquist
                sig += 0.3 * np.sin(2 * np.pi * 2 * f * t)
        elif kind == "chirp":  # f -> 1.5 f over the active part
            d = active / sr
            sig = np.sin(2 * np.pi * (f * t + 0.5 * f * t**2 / (2 * d)))
        elif kind == "noise":  # white noise band-passed to f/1.4 .. 1.4 f
            spec = np.fft.rfft(rng.standard_normal(active))
            freqs = np.fft.rfftfreq(active, 1 / sr)
            spec[(freqs < f / 1.4) | (freqs > f * 1.4)] = 0
            sig = np.fft.irfft(spec, active)
        else:  # pulses: the tone gated at 8 Hz
            sig = np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * 8 * t) > 0)
        sig /= np.abs(sig).max() + 1e-9
        fade = min(int(0.01 * sr), active // 2)
        if fade:
            ramp = np.linspace(0.0, 1.0, fade)
            sig[:fade] *= ramp
            sig[active - fade :] *= ramp[::-1]
        out = rng.uniform(0.005, 0.03) * rng.standard_normal(length)
        out[onset : onset + active] += rng.uniform(0.5, 0.9) * sig
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def read_synthetic(
    root=None,
    *,
    num_classes: int = 5,
    per_class: int = 40,
    seconds: float = 1.0,
    seed: int = 0,
    valid_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> DatasetIndex:
    """An official split per class: the first items train, then valid, then test."""
    if num_classes < 2:
        raise SurgeonError(f"data.options.num_classes: synthetic needs at least 2 classes, got {num_classes}")
    if per_class < 3:
        raise SurgeonError(f"data.options.per_class: synthetic needs at least 3 items per class, got {per_class}")
    if not 0 < seconds <= MAX_SYNTHETIC_SECONDS:  # rendered in memory, clip by clip
        raise SurgeonError(f"data.options.seconds: must be in (0, {MAX_SYNTHETIC_SECONDS}], got {seconds}")
    if num_classes * per_class > MAX_SYNTHETIC_ITEMS:
        raise SurgeonError(f"data.options: {num_classes} classes x {per_class} items is more than "
                           f"{MAX_SYNTHETIC_ITEMS:,} synthetic clips")
    source = SyntheticSource(num_classes=num_classes, per_class=per_class, seconds=seconds, seed=seed)
    n_test = max(1, round(per_class * test_fraction))
    n_valid = max(1, round(per_class * valid_fraction))
    n_train = per_class - n_valid - n_test
    if n_train < 1:
        raise SurgeonError(f"data.options.per_class: {per_class} items per class leave none for training")
    items = []
    for c, name in enumerate(source.classes):
        for n in range(per_class):
            group = "train" if n < n_train else "valid" if n < n_train + n_valid else "test"
            items.append(Item(key=f"synthetic/{name}/{n}", label=c, path=None, group=group))
    return DatasetIndex(
        name="synthetic", root=None, classes=source.classes, items=items, protocol="official", synthetic=source
    )
