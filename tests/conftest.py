"""Shared fixtures: tiny models of every family, built from configs and saved with save_pretrained."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

FAMILIES = ("ast", "vit", "bert", "hubert", "wav2vec2")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """tiny_dir(family, **overrides) -> path of a saved tiny model (cached per arguments)."""
    from surgeon.tiny import save_tiny

    cache = {}

    def make(family: str, **overrides):
        key = (family, tuple(sorted(overrides.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"tiny-{family}") / "model"
            save_tiny(family, out, **overrides)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param
