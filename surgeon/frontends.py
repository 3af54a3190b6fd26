"""How each family's models read their input (`Family.frontend`): which features the data computes
(surgeon.data.features) and how a collated batch becomes the model's keyword arguments.

  fbank     AST: the log-mel filterbank [B, frames, mel] as input_values
  image     ViT-likes (DeiT, BEiT, DINOv2, ...) on the same fbank grid: pixel_values [B, C, mel, frames],
            the one-channel spectrogram repeated over the colour channels (what summing the patch
            projection over its channels does in AST's ImageNet initialisation); frequency is the
            image's height and time its width, so patches are frequency-major as in AST
  waveform  the speech encoders: input_values [B, samples], with the padding mask where one is passed
  logmel    Whisper: input_features [B, mel, frames] (its feature extractor's definition)
  tokens    text models: not trained on audio here
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable


def unwrap(model):
    """The model inside DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


@functools.lru_cache(maxsize=None)
def _parameters(cls) -> frozenset:
    return frozenset(inspect.signature(cls.forward).parameters)


def image_from_fbank(model, fbank):
    """[B, frames, mel] -> [B, num_channels, mel, frames]."""
    channels = int(getattr(model.config, "num_channels", 1) or 1)
    return fbank.transpose(1, 2).unsqueeze(1).expand(-1, channels, -1, -1)


def _as_is(model, batch, name: str) -> dict:
    return {name: batch["input_values"]}


def _with_mask(model, batch, name: str) -> dict:
    kwargs = {name: batch["input_values"]}
    if "attention_mask" in batch:
        kwargs["attention_mask"] = batch["attention_mask"]
    return kwargs


def _as_image(model, batch, name: str) -> dict:
    model = unwrap(model)
    x = image_from_fbank(model, batch["input_values"])
    configured = model.config.image_size
    configured = tuple(configured) if isinstance(configured, (list, tuple)) else (configured, configured)
    kwargs = {name: x}
    if tuple(x.shape[-2:]) != configured and "interpolate_pos_encoding" in _parameters(type(model)):
        kwargs["interpolate_pos_encoding"] = True  # relative or interpolated positions (BEiT)
    return kwargs


@dataclass(frozen=True)
class Frontend:
    features: str | None  # FeatureSpec.kind the data computes; None for inputs that are not audio
    input_name: str  # the model's keyword for it
    inputs: Callable[..., dict] = _as_is  # (model, batch, input_name) -> the model's keyword arguments


FRONTENDS = {
    "fbank": Frontend("fbank", "input_values"),
    "image": Frontend("fbank", "pixel_values", _as_image),
    "waveform": Frontend("waveform", "input_values", _with_mask),
    "logmel": Frontend("logmel", "input_features"),
    "tokens": Frontend(None, "input_ids"),
}


def model_inputs(model, family, batch) -> dict:
    """Keyword arguments of `model` (of `family`) for a collated batch."""
    frontend = FRONTENDS[family.frontend]
    return frontend.inputs(model, batch, frontend.input_name)
