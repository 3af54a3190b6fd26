"""Position embeddings carried over to a new max length: cropped or interpolated, never zeros."""
from __future__ import annotations

import pytest
import torch

from surgeon.errors import SurgeonError
from surgeon.positions import resize_position_embeddings
from surgeon.tiny import build_tiny


def tiny_ast():
    model = build_tiny("ast", max_length=100)  # grid 12 x 9 + CLS + DIST = 110 rows
    table = model.audio_spectrogram_transformer.embeddings.position_embeddings
    with torch.no_grad():
        table.copy_(torch.randn_like(table))
    return model, table.detach().clone()


def table_of(model):
    return model.audio_spectrogram_transformer.embeddings.position_embeddings


def grid(table, t):
    return table[0, 2:].reshape(12, t, -1)


def test_crop_keeps_special_rows_and_pretrained_values():
    model, before = tiny_ast()
    resize_position_embeddings(model, 50)  # time patches 9 -> 4
    after = table_of(model)
    assert after.shape == (1, 2 + 12 * 4, 32) and model.config.max_length == 50
    torch.testing.assert_close(after[0, :2], before[0, :2])
    torch.testing.assert_close(grid(after, 4), grid(before, 9)[:, 2:6])  # the centre columns
    model.eval()
    assert model(torch.randn(2, 50, 128)).logits.shape == (2, 5)


def test_crop_from_start():
    model, before = tiny_ast()
    resize_position_embeddings(model, 50, crop="start")
    torch.testing.assert_close(grid(table_of(model), 4), grid(before, 9)[:, :4])


def test_growing_interpolates_never_zeros():
    model, before = tiny_ast()
    resize_position_embeddings(model, 300)  # time patches 9 -> 29
    after = table_of(model)
    assert after.shape == (1, 2 + 12 * 29, 32) and model.config.max_length == 300
    torch.testing.assert_close(after[0, :2], before[0, :2])
    assert (after.abs().sum(-1) > 0).all()
    want = torch.nn.functional.interpolate(grid(before, 9).permute(2, 0, 1)[None], size=(12, 29), mode="bilinear")
    torch.testing.assert_close(grid(after, 29), want[0].permute(1, 2, 0))
    # each interpolated value lies between the pre-trained values of its row
    g0, g1 = grid(before, 9), grid(after, 29)
    assert (g1 <= g0.amax(1, keepdim=True) + 1e-6).all() and (g1 >= g0.amin(1, keepdim=True) - 1e-6).all()
    assert after.requires_grad
    model.eval()
    assert model(torch.randn(1, 300, 128)).logits.shape == (1, 5)


def test_same_length_changes_nothing_and_saved_model_reloads(tmp_path):
    import transformers

    model, before = tiny_ast()
    resize_position_embeddings(model, 100)
    torch.testing.assert_close(table_of(model), before)
    resize_position_embeddings(model, 400)
    model.save_pretrained(tmp_path)
    again = transformers.ASTForAudioClassification.from_pretrained(tmp_path)
    assert again.config.max_length == 400
    torch.testing.assert_close(table_of(again), table_of(model))


def test_refuses_what_it_cannot_resize():
    model, _ = tiny_ast()
    with pytest.raises(SurgeonError, match="shorter than one patch"):
        resize_position_embeddings(model, 8)
    with pytest.raises(SurgeonError, match="no position table over time"):
        resize_position_embeddings(build_tiny("hubert"), 100)
