"""A fingerprint of a base model, to tell whether an adapter was made for it.

It hashes the shapes, dtypes and bytes of the query, key and value weights of the first and the last
layer, found by role through the anatomy, so the same weights give the same fingerprint whether they
are read from a checkpoint on disk (classic key names) or from a model in memory (transformers-5
names). Different checkpoints of one architecture differ in those bytes; reading six matrices keeps
it cheap for any model size.
"""
from __future__ import annotations

import hashlib
from typing import Callable

from surgeon.anatomy import Family

FINGERPRINT_ROLES = ("q", "k", "v")


def fingerprint(family: Family, num_layers: int, get: Callable[[int, str], object]) -> str:
    """`get(layer, role)` returns that role's weight tensor; returns 'sha256:<first 16 hex>'."""
    import torch

    h = hashlib.sha256(family.name.encode())
    for layer in sorted({0, num_layers - 1}):
        for role in FINGERPRINT_ROLES:
            t = get(layer, role).detach().to("cpu").contiguous()
            h.update(f"{layer}.{role}:{t.dtype}:{list(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()[:16]


def checkpoint_fingerprint(ckpt) -> str:
    """Fingerprint of a surgeon.io.checkpoint.Checkpoint (reads six tensors)."""
    return fingerprint(ckpt.family, ckpt.dims["num_layers"], lambda i, r: ckpt.get(ckpt.role_key(i, r)))


def model_fingerprint(model) -> str:
    """Fingerprint of a transformers model in memory."""
    from surgeon.hf import family_of_model, layer_module_path

    fam = family_of_model(model)
    n = fam.dims(model.config.to_dict())["num_layers"]  # the table's config key, as for a checkpoint

    def get(i, role):
        return model.get_submodule(layer_module_path(model, fam, i, role)).weight

    return fingerprint(fam, n, get)
