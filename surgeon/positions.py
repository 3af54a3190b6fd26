"""Carry a pre-trained position table over to a new input size.

The papers train AST at 100-800 frames from a checkpoint made at 1,024. Loading such a checkpoint
with a mismatched table must not leave zeros (the reference code's defect): the patch part of the
table is a grid (frequency x time patches, frequency-major); each axis is cropped when it shrinks and
bilinearly interpolated when it grows, as the AST authors do; the special tokens' rows (CLS, DIST)
are kept as they are. An image model fed the same spectrogram (a DeiT on the fbank grid) gets its
square grid resized to the spectrogram's frequency x time grid the same way.

What a family's grid is comes from its anatomy record: `token_grid` (config keys of size, patch and
stride per axis), `num_special_tokens`, and `patch_embedding` (where the table is); a family
without a table (BEiT's relative positions, DINOv2's interpolated ones) is resized by the model
itself at run time.
"""
from __future__ import annotations

from surgeon.errors import SurgeonError


def _pick(value, axis: int):
    return value[axis] if isinstance(value, (list, tuple)) else value


def patch_axes(family, config) -> list[tuple[int, int, int]]:
    """[(size, patch, stride) of the frequency axis (height), of the time axis (width)]."""
    if family.token_grid is None:
        raise SurgeonError(
            f"{family.name}: this model has no 2-D patch grid (only patch models such as ast, vit, deit or beit have one)")
    # an axis without keys (BEATs' time) follows the input: None
    return [None if keys is None else tuple(int(_pick(getattr(config, key), axis)) for key in keys)
            for axis, keys in enumerate(family.token_grid)]


def grid_of(axes, height: int | None = None, width: int | None = None) -> tuple[int, int]:
    """Patches per axis for an input of height x width (default: the configured sizes)."""
    sizes = (height if height is not None else axes[0][0], width if width is not None else axes[1][0])
    return tuple((size - patch) // stride + 1 for size, (_, patch, stride) in zip(sizes, axes))


def _set_sizes(family, config, height: int, width: int) -> None:
    """Write the input size into the config keys the grid is read from."""
    (h_key, _, _), (w_key, _, _) = family.token_grid
    if h_key == w_key:
        setattr(config, h_key, [height, width])
    else:
        setattr(config, h_key, height)
        setattr(config, w_key, width)


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
    """Resize the model's position table in place for inputs of `max_frames` frames (the time axis)
    and set the config's length. A no-op when the length already matches."""
    from surgeon.hf import family_of_model

    family = family_of_model(model)
    if family.patch_embedding is None or family.token_grid is None:
        raise SurgeonError(f"model: the {family.name} family has no position table over time to resize")
    fit_patch_grid(model, None, max_frames, crop)


def fit_patch_grid(model, height: int | None, width: int | None, crop: str = "center") -> bool:
    """Make the model's position table cover inputs of height x width (frequency bins x frames; None
    keeps an axis): the table is resized and the config follows. Returns False, changing nothing, for a
    family without a table of its own (its positions follow the input at run time)."""
    import torch

    from surgeon.hf import base_prefix, family_of_model

    family = family_of_model(model)
    if family.patch_embedding is None or family.token_grid is None:
        return False
    config = model.config
    axes = patch_axes(family, config)
    height = axes[0][0] if height is None else height
    width = axes[1][0] if width is None else width
    old, new = grid_of(axes), grid_of(axes, height, width)
    if new[0] < 1 or new[1] < 1:
        what = "data.max_frames" if new[1] < 1 else "data.num_mel_bins"
        raise SurgeonError(f"{what}: {width if new[1] < 1 else height} is shorter than one patch ({axes[1][1]})")
    prefix = base_prefix(model, family)
    proj_path, table_path = family.patch_embedding
    owner_path, _, table_name = table_path.rpartition(".")
    owner = model.get_submodule(prefix + owner_path)
    param = getattr(owner, table_name)
    if old != new:
        with torch.no_grad():
            resized = resize_grid(param.data, family.num_special_tokens, old, new, crop=crop)
        setattr(owner, table_name, torch.nn.Parameter(resized, requires_grad=param.requires_grad))
    _set_sizes(family, config, height, width)
    own = getattr(owner, "config", None)
    if own is not None and own is not config:
        _set_sizes(family, own, height, width)
    patches = model.get_submodule(prefix + proj_path.rpartition(".")[0])
    for module in (owner, patches):  # ViT's and DeiT's embeddings check the input size against theirs
        if hasattr(module, "image_size"):
            module.image_size = (height, width)
        if hasattr(module, "num_patches"):
            module.num_patches = new[0] * new[1]
    return True
