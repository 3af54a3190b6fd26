"""The current padding mask of a padded speech batch, as the injected modules read it (set by the hooks
of surgeon/methods/padding.py for the duration of the encoder's forward)."""
from __future__ import annotations

import contextvars


_MASK = contextvars.ContextVar("surgeon_padding_mask", default=None)


def keep_mask(x):
    """[B, T] bool (True: a real frame) for a module input x [B, T, ...] of the encoder running now,
    or None (no padding, or an input of another shape, e.g. Soft-MoA's slots)."""
    mask = _MASK.get()
    if mask is None or mask.shape[0] != x.shape[0] or mask.shape[1] != x.shape[1]:
        return None
    return mask


def zero_padded(h):
    """h [B, T, ...] with padded frames set to zero (h itself when nothing is padded)."""
    keep = keep_mask(h)
    if keep is None:
        return h
    return h * keep.reshape(*keep.shape, *([1] * (h.dim() - 2))).to(h.dtype)


def set_mask(mask) -> None:
    _MASK.set(mask)
