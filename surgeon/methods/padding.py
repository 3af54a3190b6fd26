"""The padding mask of a padded speech batch, carried to the injected modules.

The speech encoders (HuBERT, wav2vec 2.0, WavLM, ...) pad waveforms to the batch's longest and give the
encoder a frame mask [B, T]; the layers' attention keeps padded frames out, but an adapter never saw the
mask, so a convolution over frames (Convpass, Conformer, Convpass experts) read padded frames and Soft-MoA's
dispatch softmax ran over them. Now a pre-hook on the encoder module (the parent of the layer list) puts the
mask in a context variable for the duration of the encoder's forward, and the modules ask `keep_mask(x)` (surgeon/modules/padding.py):
padded frames are zeroed before any convolution (as the 'same' padding of an unpadded item is zeros) and
get no dispatch weight, so a padded batch gives each item the output it gets alone.
"""
from __future__ import annotations

from surgeon.methods.hooks import SurgeonHook
from surgeon.modules.padding import set_mask


class PaddingTap(SurgeonHook):
    """Pre-hook on the encoder: its frame mask [B, T] (the first after the hidden states) becomes current."""

    pre = True

    def __init__(self, method: str, attr: str, marks_padding: bool = False):
        super().__init__(method, attr)
        self.marks_padding = marks_padding  # the encoder's mask is True on padded frames (BEATs)

    def __call__(self, module, args, kwargs):
        import torch

        name = "padding_mask" if self.marks_padding else "attention_mask"
        mask = kwargs.get(name, args[1] if len(args) > 1 else None)
        if torch.is_tensor(mask) and mask.dim() == 2:
            keep = ~mask.bool() if self.marks_padding else mask.bool()
            set_mask(None if bool(keep.all()) else keep)  # set at every forward: nothing stale survives
        else:
            set_mask(None)
        return None


class PaddingClear(SurgeonHook):
    def __call__(self, module, args, kwargs, output):
        set_mask(None)
        return None


def track_padding(target, method: str) -> None:
    """Carry the encoder's padding mask to `method`'s modules, on families whose batches are padded waveforms."""
    if target.family.padding_mask is False:
        return
    parent = (target.prefix + target.family.memory.layers).rpartition(".")[0]
    encoder = target.model.get_submodule(parent) if parent else target.model
    PaddingTap(method, "", marks_padding=target.family.encoder_mask == "pad").register(encoder)
    PaddingClear(method, "").register(encoder)
