"""Bad audio: a corrupt or missing file stops with its path, or is skipped and counted."""
from __future__ import annotations

import pytest

from surgeon.data import AudioDataset, FeatureSpec, collate, load_index, splits_for
from surgeon.data.miniature import make_folder
from surgeon.errors import SurgeonError


@pytest.fixture
def items(tmp_path):
    root = make_folder(tmp_path / "data", classes=2, per_class=3, seconds=0.2)
    return load_index("folder", root).items


def test_corrupt_wav_stops_with_its_path(items):
    bad = items[1].path
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + b"\x01" * 100)
    with pytest.raises(SurgeonError) as e:
        AudioDataset(items, FeatureSpec(max_frames=20), None)
    msg = str(e.value)
    assert msg.startswith(f"{bad}: cannot read audio") and "\n" not in msg


def test_corrupt_wav_skipped_and_counted(items):
    items[1].path.write_bytes(b"not audio at all")
    items[4].path.unlink()
    ds = AudioDataset(items, FeatureSpec(max_frames=20), None, on_error="skip")
    assert len(ds) == len(items) - 2
    assert ds.skipped == [items[1].key, items[4].key]
    assert "audio file not found" in ds.errors[1]
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["input_values"].shape == (4, 20, 128)


def test_file_lost_after_the_check(items, tmp_path):
    spec = FeatureSpec(max_frames=20)
    ds = AudioDataset(items, spec, tmp_path / "cache", on_error="skip")
    items[0].path.unlink()
    out = ds[0]
    assert out["skipped"] == items[0].key and ds.skipped == [items[0].key]
    assert collate([out, ds[1]])["skipped"] == [items[0].key]
    strict = AudioDataset(items[1:], spec, None)
    items[2].path.unlink()
    with pytest.raises(SurgeonError, match=f"{items[2].path}: audio file not found"):
        strict[1]


def test_on_error_value_checked(items):
    with pytest.raises(SurgeonError, match="data.on_error: unknown value 'ignore'"):
        AudioDataset(items, FeatureSpec(), None, on_error="ignore")


def test_synthetic_items_need_their_source():
    idx = load_index("synthetic", None, num_classes=2, per_class=3)
    with pytest.raises(SurgeonError, match="synthetic source"):
        AudioDataset(splits_for(idx)[0].train, FeatureSpec(), None)
