"""Tiny models built from transformers configs: the offline demo, the tests and the benchmarks use
them in place of Hub checkpoints, through the same save/load code that real checkpoints go through.

Each family's record (surgeon.anatomy, `Family.tiny`) names its config class, default model class and
the overrides; the shapes keep every family's real structure (AST's 128 mel bins and 16x16 patches,
HuBERT's conv front end, Whisper's decoder) at a size that builds in milliseconds.
"""
from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path

from surgeon.anatomy import FAMILIES
from surgeon.errors import SurgeonError

# family -> (config class, default model class, config overrides); a view of the anatomy records
TINY = {name: (f.tiny.config, f.tiny.model, dict(f.tiny.overrides)) for name, f in FAMILIES.items()}


def build_tiny(family: str, *, model_class: str | None = None, seed: int = 0, **overrides):
    """A randomly initialised tiny model of `family` (a transformers PreTrainedModel, or the family's
    own module for a family that transformers does not implement)."""
    import torch

    if family not in FAMILIES:
        raise SurgeonError(f"no tiny model for family {family!r}; known: {', '.join(FAMILIES)}")
    tiny = FAMILIES[family].tiny
    if tiny.builder is not None:
        module, name = tiny.builder
        torch.manual_seed(seed)
        return getattr(import_module(module), name)(model_class=model_class, **{**tiny.overrides, **overrides}).eval()
    import transformers

    config = getattr(transformers, tiny.config)(**{**tiny.overrides, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_class or tiny.model)(config)
    return model.eval()


def save_tiny(family: str, out: str | os.PathLike, *, force: bool = False, shard_size: int | None = None,
              dtype: str | None = None, **kwargs) -> Path:
    """Build a tiny model and save it with save_pretrained, atomically."""
    from surgeon.api import save_model_files
    from surgeon.hf import quiet_transformers
    from surgeon.io.atomic import atomic_output

    quiet_transformers()
    model = build_tiny(family, **kwargs)
    with atomic_output(out, force=force) as tmp:
        save_model_files(model, tmp, shard_size, dtype)
    return Path(out)
