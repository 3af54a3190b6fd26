"""Tiny models built from transformers configs: the offline demo, the tests and the benchmarks use
them in place of Hub checkpoints, through the same save/load code that real checkpoints go through.

TINY is one table: family -> (config class, task model class, config overrides). The shapes keep every
family's real structure (AST's 128 mel bins and 16x16 patches, HuBERT's conv front end) at a size
that builds in milliseconds.
"""
from __future__ import annotations

import os
from pathlib import Path

from surgeon.errors import SurgeonError

_SPEECH = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2, vocab_size=32,
)
TINY = {
    "ast": ("ASTConfig", "ASTForAudioClassification", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_length=100, num_mel_bins=128, num_labels=5)),
    "vit": ("ViTConfig", "ViTForImageClassification", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=16, num_labels=5)),
    "bert": ("BertConfig", "BertModel", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64)),
    "hubert": ("HubertConfig", "HubertForCTC", dict(_SPEECH)),
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2ForSequenceClassification", dict(_SPEECH, num_labels=5)),
}


def build_tiny(family: str, *, model_class: str | None = None, seed: int = 0, **overrides):
    """A randomly initialised tiny model of `family` (a transformers PreTrainedModel)."""
    import torch
    import transformers

    if family not in TINY:
        raise SurgeonError(f"no tiny model for family {family!r}; known: {', '.join(TINY)}")
    config_name, class_name, defaults = TINY[family]
    config = getattr(transformers, config_name)(**{**defaults, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_class or class_name)(config)
    return model.eval()


def save_tiny(family: str, out: str | os.PathLike, *, force: bool = False, **kwargs) -> Path:
    """Build a tiny model and save it with save_pretrained, atomically."""
    from surgeon.io.atomic import atomic_output

    from surgeon.hf import quiet_transformers

    quiet_transformers()
    model = build_tiny(family, **kwargs)
    with atomic_output(out, force=force) as tmp:
        model.save_pretrained(tmp)
    return Path(out)
