"""BEATs' front end: the Kaldi fbank with BEATs' constants, the time-major patch order, and the two ways a
padding mask on samples becomes a mask on tokens (each rule transcribed here with plain loops)."""
from __future__ import annotations

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from surgeon.beats import frontend
from surgeon.beats.checkpoint import build, parse
from surgeon.beats.fixtures import beats_cfg, beats_state_dict
from surgeon.errors import SurgeonError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def beats_fbank_written_out(wav):
    """BEATs' pre-processing with every constant spelled out."""
    rows = []
    for w in wav:
        f = kaldi.fbank(w.unsqueeze(0) * 32768.0, num_mel_bins=128, sample_frequency=16000.0, frame_length=25.0,
                        frame_shift=10.0, dither=0.0, window_type="povey", snip_edges=True)
        rows.append((f - 15.41663) / (2 * 6.55582))
    return torch.stack(rows)


def test_fbank_is_kaldis_with_beats_constants():
    wav = torch.randn(2, 20_800, generator=torch.Generator().manual_seed(0)) * 0.1
    got = frontend.fbank(wav)
    assert got.shape == (2, 128, 128)
    assert torch.equal(got, beats_fbank_written_out(wav))


@pytest.mark.parametrize("samples, frames", [(16_000, 98), (400, 1), (559, 1), (560, 2), (2_800, 16), (80_000, 498)])
def test_frame_count(samples, frames):
    assert frontend.num_frames(samples) == frames
    assert frontend.fbank(torch.zeros(1, samples)).shape[1] == frames


def test_shorter_than_a_frame_is_a_one_line_error():
    with pytest.raises(SurgeonError, match="shorter than one fbank frame"):
        frontend.fbank(torch.zeros(1, 399))


@pytest.fixture(scope="module")
def model():
    cfg = beats_cfg("small")
    return build(parse({"cfg": cfg, "model": beats_state_dict(cfg)}, "small.pt"))


def test_patches_are_time_major(model):
    """Changing the fbank inside patch (t, f) changes token t * 8 + f, and only that one."""
    fb = torch.randn(1, 64, 128, generator=torch.Generator().manual_seed(1))  # 4 x 8 patches
    with torch.no_grad():
        base = model.embed(fb)
        for t, f in [(0, 0), (0, 7), (1, 0), (3, 5)]:
            changed = fb.clone()
            changed[0, 16 * t: 16 * t + 16, 16 * f: 16 * f + 16] += 1.0
            moved = (model.embed(changed) - base).abs().amax(-1)[0] > 0
            assert moved.nonzero().flatten().tolist() == [t * 8 + f]


def test_frames_that_do_not_fill_a_patch_are_dropped(model):
    with torch.no_grad():
        assert model.embed(torch.randn(1, 47, 128)).shape[1] == 2 * 8


def groups_all_padding(row: list[bool], groups: int) -> list[bool]:
    """The authors' rule: trailing remainder dropped, equal groups, padding when all of a group is."""
    n = len(row) // groups
    return [all(row[g * n:(g + 1) * n]) for g in range(groups)]


def authors_rule(row: list[bool]) -> list[bool]:
    frames = frontend.num_frames(len(row))
    return groups_all_padding(groups_all_padding(row, frames), (frames // 16) * 8)


def strict_rule(row: list[bool]) -> list[bool]:
    """A token is kept when every sample of each of its 16 frames is audio."""
    frames = frontend.num_frames(len(row))
    frame_pad = [any(row[160 * i: 160 * i + 400]) for i in range(frames)]
    return [any(frame_pad[16 * t: 16 * t + 16]) for t in range(frames // 16) for _ in range(8)]


@pytest.mark.parametrize("mode, rule", [("authors", authors_rule), ("strict", strict_rule)])
def test_token_masks_follow_their_rule(mode, rule):
    gen = torch.Generator().manual_seed(2)
    masks = torch.zeros(6, 16_000, dtype=torch.bool)
    for i, keep in enumerate([16_000, 12_345, 8_000, 5_600, 3_000]):
        masks[i, keep:] = True
    masks[5] = torch.rand(16_000, generator=gen) < 0.5  # not a suffix: the rules still apply
    got = frontend.token_mask(masks, 16, 8, mode)
    assert got.tolist() == [rule(row) for row in masks.tolist()]


def test_strict_keeps_exactly_the_tokens_of_the_item_alone():
    for keep in (2_800, 5_600, 8_000, 12_345, 16_000):
        mask = torch.zeros(1, 16_000, dtype=torch.bool)
        mask[0, keep:] = True
        tokens = frontend.token_mask(mask, 16, 8, "strict")[0]
        alone = (frontend.num_frames(keep) // 16) * 8
        assert tokens.tolist() == [False] * alone + [True] * (tokens.numel() - alone)


def test_the_authors_rule_keeps_more_than_the_item_alone():
    """Why "strict" exists: half a second padded to one keeps 25 tokens; alone, the half second has 24."""
    mask = torch.zeros(1, 16_000, dtype=torch.bool)
    mask[0, 8_000:] = True
    assert int((~frontend.token_mask(mask, 16, 8, "authors")).sum()) == 25
    assert (frontend.num_frames(8_000) // 16) * 8 == 24


def test_unknown_mask_mode():
    with pytest.raises(SurgeonError, match="did you mean 'strict'"):
        frontend.token_mask(torch.zeros(1, 16_000, dtype=torch.bool), 16, 8, "strikt")
