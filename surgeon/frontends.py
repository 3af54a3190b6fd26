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

import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Frontend:
    features: str | None  # FeatureSpec.kind the data computes; None for inputs that are not audio
    input_name: str  # the model's keyword for it


FRONTENDS = {
    "fbank": Frontend("fbank", "input_values"),
    "image": Frontend("fbank", "pixel_values"),
    "waveform": Frontend("waveform", "input_values"),
    "logmel": Frontend("logmel", "input_features"),
    "tokens": Frontend(None, "input_ids"),
}


def unwrap(model):
    """The model inside DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(type(model).forward).parameters


def image_from_fbank(model, fbank):
    """[B, frames, mel] -> [B, num_channels, mel, frames]."""
    channels = int(getattr(model.config, "num_channels", 1) or 1)
    return fbank.transpose(1, 2).unsqueeze(1).expand(-1, channels, -1, -1)


def model_inputs(model, family, batch) -> dict:
    """Keyword arguments of `model` (of `family`) for a collated batch."""
    frontend = FRONTENDS[family.frontend]
    x = batch["input_values"]
    if family.frontend == "image":
        model = unwrap(model)
        x = image_from_fbank(model, x)
        size = tuple(x.shape[-2:])
        configured = model.config.image_size
        configured = tuple(configured) if isinstance(configured, (list, tuple)) else (configured, configured)
        kwargs = {frontend.input_name: x}
        if size != configured and _accepts(model, "interpolate_pos_encoding"):
            kwargs["interpolate_pos_encoding"] = True  # relative or interpolated positions (BEiT)
        return kwargs
    kwargs = {frontend.input_name: x}
    if "attention_mask" in batch and family.frontend == "waveform":
        kwargs["attention_mask"] = batch["attention_mask"]
    return kwargs
