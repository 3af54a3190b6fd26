"""BEATs' front end: a 16 kHz waveform -> normalised Kaldi fbank, and a padding mask on samples -> tokens.

The fbank is torchaudio's Kaldi-compatible one on the waveform scaled to 16-bit range, with BEATs'
settings below and torchaudio's defaults for everything else (dither 0, povey window, snip_edges: so
frame i covers samples [160 i, 160 i + 400)), normalised as (fbank - mean) / (2 std).

Two ways to turn a padding mask on samples (True = padding) into one on tokens:
- "authors": what the authors' code does, reducing twice (samples -> fbank frames -> tokens): drop the
  trailing remainder, split the rest into as many equal groups as there are frames (then tokens), and a
  group is padding only when all of it is. The groups do not follow the frames' real extent, nor the
  time-major token order, so kept tokens may hold padding; use it to compute what their code computes.
- "strict": a token is padding when any sample it is computed from is (any sample of any of the patch's
  frames). The kept tokens of a padded item are then exactly the tokens of the item run alone, and a
  padded batch gives each item's own result.
"""
from __future__ import annotations

from surgeon.errors import SurgeonError

SAMPLE_RATE = 16000
WAVE_SCALE = 2 ** 15  # BEATs computes the fbank of int16-scaled audio
FBANK_OPTIONS = dict(num_mel_bins=128, sample_frequency=SAMPLE_RATE, frame_length=25.0, frame_shift=10.0)
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
FRAME_LENGTH = 400  # samples (25 ms)
FRAME_SHIFT = 160  # samples (10 ms)


def num_frames(num_samples: int) -> int:
    """Fbank frames of a waveform (snip_edges: only whole frames)."""
    return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def min_samples(patch: int) -> int:
    """The shortest waveform that fills one patch of `patch` frames."""
    return FRAME_LENGTH + (patch - 1) * FRAME_SHIFT


def fbank(waveform):
    """[batch, samples] float waveform -> [batch, frames, 128] normalised fbank (float32)."""
    import torch
    import torchaudio.compliance.kaldi as kaldi

    if waveform.shape[-1] < FRAME_LENGTH:
        raise SurgeonError(f"waveform of {waveform.shape[-1]} samples is shorter than one fbank frame "
                           f"({FRAME_LENGTH} samples at {SAMPLE_RATE} Hz)")
    scaled = waveform.float() * WAVE_SCALE
    # torchaudio's fbank reads one channel: one call per item
    frames = torch.stack([kaldi.fbank(item.unsqueeze(0), **FBANK_OPTIONS) for item in scaled])
    return (frames - FBANK_MEAN) / (2 * FBANK_STD)


# -- padding masks ------------------------------------------------------------------------------------
def _all_of_groups(mask, groups: int):
    """The authors' reduction: drop the remainder, `groups` equal groups, padding when all of a group is."""
    usable = mask.shape[1] - mask.shape[1] % groups
    return mask[:, :usable].reshape(mask.shape[0], groups, -1).all(-1)


def authors_token_mask(sample_mask, frames: int, patch: int, frequency_patches: int):
    tokens = (frames // patch) * frequency_patches
    return _all_of_groups(_all_of_groups(sample_mask, frames), tokens)


def strict_token_mask(sample_mask, frames: int, patch: int, frequency_patches: int):
    frame_mask = sample_mask.unfold(1, FRAME_LENGTH, FRAME_SHIFT)[:, :frames].any(-1)
    steps = frames // patch
    step_mask = frame_mask[:, : steps * patch].reshape(sample_mask.shape[0], steps, patch).any(-1)
    return step_mask.repeat_interleave(frequency_patches, dim=1)  # time-major: token t * F + f


MASK_MODES = {"authors": authors_token_mask, "strict": strict_token_mask}


def token_mask(sample_mask, patch: int, frequency_patches: int, mode: str = "authors"):
    """[batch, samples] bool (True = padding) -> [batch, tokens] bool, by MASK_MODES[mode]."""
    from surgeon.errors import did_you_mean

    if mode not in MASK_MODES:
        raise SurgeonError(f"unknown padding-mask mode {mode!r}; known: {', '.join(MASK_MODES)}"
                           f"{did_you_mean(mode, MASK_MODES)}")
    return MASK_MODES[mode](sample_mask, num_frames(sample_mask.shape[1]), patch, frequency_patches)
