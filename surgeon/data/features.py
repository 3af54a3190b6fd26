"""What the model sees: the AST log-mel filterbank, the raw waveform or Whisper's log-mel spectrogram,
and how audio is read. Which one a model takes is its family's front end (surgeon.frontends).

FeatureSpec holds every setting; `cache_key()` hashes the ones that change the features, so the
on-disk cache (cache.py) is invalidated when any of them changes. SpecAugment settings are not part
of the key: masking is applied after the cache, on training items only.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from surgeon.errors import SurgeonError

TARGET_RATE = 16000
# AST's normalisation statistics (AudioSet), used by the papers for every dataset
AST_MEAN, AST_STD = -4.2677393, 4.5689974

FEATURE_KINDS = ("fbank", "waveform", "logmel")
# Whisper's short-time Fourier transform (WhisperFeatureExtractor's defaults, the same in every checkpoint)
WHISPER_N_FFT, WHISPER_HOP = 400, 160


MIN_RATE, MAX_RATE = 1_000, 768_000  # Hz: what audio files use; a header outside it is corrupt
MAX_SECONDS = 3 * 3600  # one clip; a header claiming more would allocate gigabytes before failing
MAX_FRAMES = 360_000  # fbank frames of 10 ms: one hour

@dataclass(frozen=True)
class FeatureSpec:
    kind: Literal["fbank", "waveform", "logmel"] = "fbank"
    sample_rate: int = TARGET_RATE
    max_frames: int = 1024  # fbank and logmel: frames of 10 ms; padded or cut
    max_seconds: float | None = None  # waveform: pad/cut length (None: keep, collate pads)
    num_mel_bins: int = 128
    norm_mean: float = AST_MEAN
    norm_std: float = AST_STD  # fbank normalised as (x - mean) / (2 * std)
    normalize_waveform: bool = False  # waveform: zero mean, unit variance per clip (do_normalize)
    freq_mask: int = 0  # SpecAugment (training items only); not part of the cache key
    time_mask: int = 0

    def __post_init__(self):
        if self.kind not in FEATURE_KINDS:
            raise SurgeonError(f"data.features: unknown kind {self.kind!r}; expected one of {', '.join(FEATURE_KINDS)}")
        if self.sample_rate <= 0 or self.max_frames <= 0 or self.num_mel_bins <= 0:
            raise SurgeonError("data.features: sample_rate, max_frames and num_mel_bins must be positive")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise SurgeonError("data.max_seconds: must be positive")
        # sizes checked before anything is allocated: max_frames = 1e9 asked for a 153 GB batch
        if not MIN_RATE <= self.sample_rate <= MAX_RATE:
            raise SurgeonError(f"data.sample_rate: {self.sample_rate} Hz; audio is {MIN_RATE}-{MAX_RATE} Hz")
        if self.max_frames > MAX_FRAMES:
            raise SurgeonError(f"data.max_frames: {self.max_frames} frames of 10 ms is more than "
                               f"{MAX_FRAMES} ({MAX_FRAMES // 6000} minutes) per clip")
        if self.max_seconds is not None and self.max_seconds > MAX_SECONDS:
            raise SurgeonError(f"data.max_seconds: {self.max_seconds} s is more than {MAX_SECONDS} s per clip")
        if self.freq_mask < 0 or self.time_mask < 0:
            raise SurgeonError("data.features: SpecAugment mask widths cannot be negative")

    def cache_key(self) -> str:
        """Hash of every setting that changes the cached features."""
        settings = asdict(self)
        for name in ("freq_mask", "time_mask"):
            settings.pop(name)
        if self.kind == "fbank":
            for name in ("max_seconds", "normalize_waveform"):
                settings.pop(name)
        elif self.kind == "logmel":
            for name in ("max_seconds", "normalize_waveform", "norm_mean", "norm_std"):
                settings.pop(name)
        else:
            for name in ("max_frames", "num_mel_bins", "norm_mean", "norm_std"):
                settings.pop(name)
        settings["version"] = 1  # bump when the computation itself changes
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        if self.kind == "fbank":
            return f"fbank {self.max_frames} frames x {self.num_mel_bins} mel"
        if self.kind == "logmel":
            return f"Whisper log-mel {self.num_mel_bins} mel x {self.max_frames} frames"
        return f"waveform at {self.sample_rate} Hz"

    @property
    def augments(self) -> bool:
        return self.kind == "fbank" and (self.freq_mask > 0 or self.time_mask > 0)


def feature_spec_for(model_config: dict, family_name: str, **overrides) -> FeatureSpec:
    """The features a model of `family_name` expects, from its family's front end:
    - fbank (AST, and the image families on the fbank grid): max_frames from config.max_length
      unless overridden;
    - waveform (the speech encoders): normalised when the family trains with padding masks (layer-norm
      feature encoders, as the large checkpoints' do_normalize says) unless `normalize_waveform` is
      given;
    - logmel (Whisper): num_mel_bins and the frames its encoder takes (2 per position).
    Pass `preprocessor_config` (preprocessor_config.json as a dict) to take do_normalize and the
    sampling rate from it."""
    from surgeon.anatomy import FAMILIES, get_family
    from surgeon.frontends import FRONTENDS

    known = {f.name for f in fields(FeatureSpec)} | {"preprocessor_config"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SurgeonError(f"data.features: unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    pre = overrides.pop("preprocessor_config", None) or {}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    family = get_family(family_name)
    kind = FRONTENDS[family.frontend].features
    if kind == "fbank":
        base = dict(kind="fbank", max_frames=int(model_config.get("max_length", 1024)),
                    num_mel_bins=int(model_config.get("num_mel_bins", 128)))
    elif kind == "waveform":
        do_normalize = pre.get("do_normalize", family.takes_padding_mask(model_config))
        base = dict(kind="waveform", normalize_waveform=bool(do_normalize),
                    sample_rate=int(pre.get("sampling_rate", TARGET_RATE)))
    elif kind == "logmel":
        base = logmel_settings(model_config, pre)
    else:
        audio = [n for n, f in FAMILIES.items() if FRONTENDS[f.frontend].features]
        raise SurgeonError(f"model: no audio features for family {family_name!r}; "
                           f"expected one of {', '.join(audio)}")
    return FeatureSpec(**{**base, **family.feature_settings, **overrides})


def logmel_settings(model_config: dict, pre: dict) -> dict:
    """Whisper's features: num_mel_bins bands over the frames its encoder takes (two per position, 3000
    for 30 s); a preprocessor config with another STFT is refused rather than silently changed."""
    n_fft, hop = pre.get("n_fft", WHISPER_N_FFT), pre.get("hop_length", WHISPER_HOP)
    if (n_fft, hop) != (WHISPER_N_FFT, WHISPER_HOP):
        raise SurgeonError(f"preprocessor_config.json: n_fft {n_fft} and hop_length {hop} differ from Whisper's "
                           f"{WHISPER_N_FFT} and {WHISPER_HOP}, which surgeon computes")
    mels = int(pre.get("feature_size", model_config.get("num_mel_bins", 80)))
    frames = 2 * int(model_config.get("max_source_positions", 1500))
    return dict(kind="logmel", num_mel_bins=mels, max_frames=frames, sample_rate=int(pre.get("sampling_rate", TARGET_RATE)))


# -- audio ---------------------------------------------------------------------------------------


def check_audio_header(path: Path, rate: int, frames: int, channels: int = 1) -> None:
    """Refuse what a file's header claims before reading it: no samples, a rate that is no audio's
    (a header of 1 Hz x 200,000 frames resampled to 16 kHz is 3.2 billion samples), too long a clip."""
    if frames <= 0:
        raise SurgeonError(f"{path}: the audio file holds no samples")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise SurgeonError(f"{path}: sample rate {rate} Hz in the header is not audio "
                           f"({MIN_RATE}-{MAX_RATE} Hz); the file is corrupt")
    if frames / rate > MAX_SECONDS or channels > 64:
        raise SurgeonError(f"{path}: the header claims {frames / rate / 3600:.1f} hours x {channels} channels; "
                           f"clips of at most {MAX_SECONDS // 3600} hours are read (cut the file)")


def read_audio(path: Path, start: float | None = None, end: float | None = None):
    """(float32 samples [frames, channels], rate), checked: header, readable, finite. With start/end
    only [start, end) seconds are read: a segment of a long recording without decoding the rest."""
    import numpy as np
    import soundfile as sf

    if not Path(path).is_file():
        raise SurgeonError(f"{path}: audio file not found")
    try:
        with sf.SoundFile(str(path)) as f:
            rate, frames = f.samplerate, f.frames
            check_audio_header(path, rate, frames, f.channels)
            first = max(0, int(round((start or 0.0) * rate)))
            last = frames if end is None else min(frames, int(round(end * rate)))
            if first >= frames:
                raise SurgeonError(f"{path}: the segment starts at {start:.3f} s, after the end of the audio "
                                   f"({frames / rate:.3f} s)")
            f.seek(first)
            data = f.read(max(last - first, 1), dtype="float32", always_2d=True)
    except SurgeonError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SurgeonError(f"{path}: cannot read audio ({reason})") from None
    if data.shape[0] == 0:
        raise SurgeonError(f"{path}: the audio file holds no samples")
    if not np.isfinite(data).all():
        raise SurgeonError(f"{path}: the audio holds NaN or infinite samples")
    return data, rate


def load_audio(path: Path, sample_rate: int = TARGET_RATE, start: float | None = None, end: float | None = None):
    """Read a file (or its [start, end) seconds) with soundfile, mix to mono, resample: float32 tensor [samples]."""
    import torch

    data, rate = read_audio(path, start, end)
    wav = torch.from_numpy(data).mean(dim=1)
    return resample(wav, rate, sample_rate)


def resample(wav, rate: int, target: int):
    if rate == target:
        return wav
    import torchaudio.functional as AF

    return AF.resample(wav, rate, target)


# -- features ------------------------------------------------------------------------------------


def fbank(wav, spec: FeatureSpec):
    """Kaldi-compatible log-mel filterbank of the papers: [max_frames, num_mel_bins], normalised."""
    import torch
    import torchaudio.compliance.kaldi as kaldi

    if wav.numel() < int(0.025 * spec.sample_rate):  # shorter than one 25 ms window: pad to one frame
        wav = torch.nn.functional.pad(wav, (0, int(0.025 * spec.sample_rate) - wav.numel()))
    x = kaldi.fbank(
        wav.unsqueeze(0), htk_compat=True, sample_frequency=spec.sample_rate, use_energy=False,
        window_type="hanning", num_mel_bins=spec.num_mel_bins, dither=0.0, frame_shift=10,
    )
    x = pad_or_cut(x, spec.max_frames)
    return (x - spec.norm_mean) / (2 * spec.norm_std)


def pad_or_cut(x, length: int):
    """Cut or zero-pad dimension 0 to `length`."""
    import torch

    if x.shape[0] >= length:
        return x[:length].contiguous()
    pad = [0, 0] * (x.dim() - 1) + [0, length - x.shape[0]]
    return torch.nn.functional.pad(x, pad)


def waveform(wav, spec: FeatureSpec):
    """The raw waveform, normalised per clip when the checkpoint's feature extractor does it
    (statistics over the real samples, before padding, as Wav2Vec2FeatureExtractor computes them)."""
    if spec.normalize_waveform:
        wav = (wav - wav.mean()) / (wav.var(unbiased=False) + 1e-7).sqrt()
    if spec.max_seconds is not None:
        wav = pad_or_cut(wav, int(round(spec.max_seconds * spec.sample_rate)))
    return wav.contiguous()


def logmel(wav, spec: FeatureSpec):
    """Whisper's log-mel spectrogram [num_mel_bins, max_frames], computed by transformers'
    WhisperFeatureExtractor itself (zero-padded or cut to max_frames, log10, clamped to 8 below the
    maximum, scaled as (x + 4) / 4)."""
    samples = spec.max_frames * WHISPER_HOP
    out = _whisper_extractor(spec.num_mel_bins, spec.sample_rate)(wav.numpy(), sampling_rate=spec.sample_rate, max_length=samples, padding="max_length",
                    truncation=True, return_tensors="pt")
    return out["input_features"][0].float().contiguous()


@functools.lru_cache(maxsize=4)
def _whisper_extractor(num_mel_bins: int, sample_rate: int):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=sample_rate, hop_length=WHISPER_HOP,
                                   n_fft=WHISPER_N_FFT)


COMPUTE = {"fbank": fbank, "waveform": waveform, "logmel": logmel}


def compute_features(wav, spec: FeatureSpec):
    return COMPUTE[spec.kind](wav, spec)
