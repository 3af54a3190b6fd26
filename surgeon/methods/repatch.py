"""Re-patching a patch model to non-overlapping patches (stride = patch size), for LoAA.

The patch projection keeps its weights and only changes its stride; the config's strides follow; the
position-embedding table is rebuilt for the new grid by bilinear interpolation of the pre-trained
patch positions (special tokens keep theirs), as the AST authors adapt the table to a new grid, never
zeros. The result is deterministic from the base weights, so loading an adapter re-applies it exactly.
The original table and strides are kept on the embeddings module to undo it in memory.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from surgeon.errors import SurgeonError
from surgeon.methods.target import Target

UNDO_ATTR = "_surgeon_repatch_undo"


def _parts(target: Target):
    if target.family.patch_embedding is None:
        raise SurgeonError(f"{target.family.name}: re-patching needs a patch model (ast, vit)")
    proj_path, table_path = target.family.patch_embedding
    owner_path, _, table_name = table_path.rpartition(".")
    return target.base.get_submodule(proj_path), target.base.get_submodule(owner_path), table_name


def repatch(target: Target) -> None:
    proj, owner, table_name = _parts(target)
    axes = target.grid_axes()
    old_grid = target.grid_shape()
    stride_keys = [keys[2] for keys in target.family.token_grid]
    undo = {"table": getattr(owner, table_name), "stride": proj.stride,
            "config": {k: getattr(target.config, k) for k in stride_keys}}
    for key, (_, patch, _) in zip(stride_keys, axes):
        setattr(target.config, key, patch)
    proj.stride = tuple(patch for _, patch, _ in axes)
    new_grid = target.grid_shape()
    table = undo["table"].detach()
    special = target.family.num_special_tokens
    d = table.shape[-1]
    grid = table[:, special:].reshape(1, *old_grid, d).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d).to(table.dtype)
    new = nn.Parameter(torch.cat([table[:, :special], grid], dim=1), requires_grad=undo["table"].requires_grad)
    setattr(owner, table_name, new)
    owner.__dict__[UNDO_ATTR] = undo


def undo_repatch(target: Target) -> None:
    if target.family.patch_embedding is None:
        return
    proj, owner, table_name = _parts(target)
    undo = owner.__dict__.pop(UNDO_ATTR, None)
    if undo is None:
        return
    setattr(owner, table_name, undo["table"])
    proj.stride = undo["stride"]
    for key, value in undo["config"].items():
        setattr(target.config, key, value)


def is_repatched(target: Target) -> bool:
    return target.family.patch_embedding is not None and UNDO_ATTR in _parts(target)[1].__dict__
