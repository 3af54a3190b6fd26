"""SpecAugment (frequency and time masking) on an fbank, as the AST recipes apply it.

torchaudio's masking draws from torch's global generator; `spec_augment` forks it and seeds it from
the caller's seed, so an epoch's masks are the same in every run and in every worker process.
"""
from __future__ import annotations


def spec_augment(x, freq_mask: int, time_mask: int, seed: int):
    """x: normalised fbank [frames, mel] -> masked copy, masked cells set to 0 (the normalised mean;
    AST masks before normalising, i.e. to the raw value 0)."""
    import torch
    import torchaudio.transforms as T

    if freq_mask <= 0 and time_mask <= 0:
        return x
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        y = x.t().unsqueeze(0)  # [1, mel, frames]: the layout the masks expect
        if freq_mask > 0:
            y = T.FrequencyMasking(freq_mask)(y)
        if time_mask > 0:
            y = T.TimeMasking(time_mask)(y)
    return y.squeeze(0).t().contiguous()
