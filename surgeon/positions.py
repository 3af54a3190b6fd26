"""Carry a pre-trained position table over to a new input length.

The papers train AST at 100-800 frames from a checkpoint made at 1,024. Loading such a checkpoint
with a mismatched table must not leave zeros (the reference code's defect): the patch part of the
table is a grid (frequency x time patches, frequency-major); each axis is cropped when it shrinks and
bilinearly interpolated when it grows, as the AST authors do; the special tokens' rows (CLS, DIST)
are kept as they are.

POSITION_TABLES says, per family, how many special rows lead the table and how the grid follows from
the config; a family without an entry has no resizable time axis.
"""
from __future__ import annotations

from surgeon.errors import SurgeonError


def _ast_grid(config, max_frames: int | None = None) -> tuple[int, int]:
    frames = config.max_length if max_frames is None else max_frames
    f = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    t = (frames - config.patch_size) // config.time_stride + 1
    return f, t


POSITION_TABLES = {
    # family: (special rows, grid(config, max_frames) -> (freq patches, time patches), config key of the length)
    "ast": (2, _ast_grid, "max_length"),
}


def resize_grid(table, special: int, old: tuple[int, int], new: tuple[int, int], crop: str = "center"):
    """table [1, special + F*T, d] -> [1, special + F'*T', d]; per axis crop (center or start) or
    bilinear interpolation."""
    import torch

    if crop not in ("center", "start"):
        raise SurgeonError(f"crop: expected 'center' or 'start', got {crop!r}")
    (f0, t0), (f1, t1) = old, new
    d = table.shape[-1]
    if table.shape[1] != special + f0 * t0:
        raise SurgeonError(f"position table has {table.shape[1]} rows, expected {special} + {f0}x{t0}")
    head, grid = table[:, :special], table[:, special:]
    grid = grid.reshape(1, f0, t0, d).permute(0, 3, 1, 2)  # [1, d, F, T]
    # crop the axes that shrink
    fs = 0 if crop == "start" or f1 >= f0 else (f0 - f1) // 2
    ts = 0 if crop == "start" or t1 >= t0 else (t0 - t1) // 2
    grid = grid[:, :, fs : fs + min(f0, f1), ts : ts + min(t0, t1)]
    # interpolate the axes that grow
    if grid.shape[2:] != (f1, t1):
        grid = torch.nn.functional.interpolate(grid.float(), size=(f1, t1), mode="bilinear", align_corners=False)
        grid = grid.to(table.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, f1 * t1, d)
    return torch.cat([head, grid], dim=1).contiguous()


def resize_position_embeddings(model, max_frames: int, crop: str = "center") -> None:
    """Resize the model's position table in place for inputs of `max_frames` frames and set
    config.max_length. A no-op when the length already matches."""
    import torch

    from surgeon.hf import base_prefix, family_of_model

    family = family_of_model(model)
    if family.name not in POSITION_TABLES:
        raise SurgeonError(f"model: the {family.name} family has no position table over time to resize")
    special, grid_of, length_key = POSITION_TABLES[family.name]
    config = model.config
    old, new = grid_of(config), grid_of(config, max_frames)
    if new[1] < 1:
        raise SurgeonError(f"data.max_frames: {max_frames} frames is shorter than one patch ({config.patch_size})")
    prefix = base_prefix(model, family)
    embeddings = model.get_submodule(prefix + family.embeddings)
    param = embeddings.position_embeddings
    if old != new:
        with torch.no_grad():
            resized = resize_grid(param.data, special, old, new, crop=crop)
        embeddings.position_embeddings = torch.nn.Parameter(resized, requires_grad=param.requires_grad)
    setattr(config, length_key, max_frames)
    if getattr(embeddings, "config", None) is not None and embeddings.config is not config:
        setattr(embeddings.config, length_key, max_frames)
