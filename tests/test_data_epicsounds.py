"""EPIC-SOUNDS on a miniature copy of its layout: the official CSVs over per-video audio, segments cut
by their timestamps, classes by class_id, the labelled validation CSV as the test set and a
validation split carved from training by whole videos."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from surgeon.data import load_index, splits_for
from surgeon.data.miniature import EPIC_SOUNDS_CLASSES, make_epic_sounds
from surgeon.errors import SurgeonError


@pytest.fixture(scope="module")
def epic(tmp_path_factory):
    return make_epic_sounds(tmp_path_factory.mktemp("epic") / "EPIC-SOUNDS", classes=4, videos=(6, 2))


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_index_classes_groups_and_segments(epic):
    idx = load_index("epicsounds", epic)
    assert idx.classes == [name for _, name, _ in EPIC_SOUNDS_CLASSES[:4]]  # class_ids 0, 1, 4, 5 -> 0..3
    assert idx.protocol == "official" and idx.missing == []
    assert idx.counts() == {"test": 2 * 4, "train": 6 * 4}
    first = rows(epic / "EPIC_Sounds_train.csv")[0]
    item = idx.items[0]
    assert item.key == f"train/{first['annotation_id']}" and item.source == first["video_id"]
    assert item.path == epic / "audio" / first["participant_id"] / f"{first['video_id']}.wav"
    assert (item.start, item.end) == (pytest.approx(0.1), pytest.approx(0.5))  # 00:00:00.100 - 00:00:00.500
    assert {i.label for i in idx.items if i.group == "train"} == {0, 1, 2, 3}


def test_the_split_tests_on_validation_and_carves_whole_videos(epic):
    idx = load_index("epicsounds", epic)
    (split,) = splits_for(idx, valid_from_train=0.2)
    assert {i.key.split("/")[0] for i in split.test} == {"validation"} and len(split.test) == 8
    assert split.valid and split.train
    assert not {i.source for i in split.valid} & {i.source for i in split.train}  # a video on one side
    assert {i.source for i in split.test}.isdisjoint({i.source for i in split.train + split.valid})


def test_a_segment_is_read_from_its_video(epic):
    """The dataset reads [start, stop) of the video's audio, resampled to 16 kHz, nothing else."""
    import torch

    from surgeon.data.features import load_audio, resample

    item = load_index("epicsounds", epic).items[2]
    whole, rate = sf.read(str(item.path), dtype="float32")
    cut = whole[int(round(item.start * rate)):int(round(item.end * rate))]
    got = load_audio(item.path, 16000, item.start, item.end)
    torch.testing.assert_close(got, resample(torch.from_numpy(cut), rate, 16000), atol=0, rtol=0)
    assert got.shape[0] == round((item.end - item.start) * 16000)


def test_dataset_features_come_from_the_segment(epic):
    """Two segments of one video give the features of their own samples (the cache keeps them apart)."""
    import torch

    from surgeon.data import AudioDataset, FeatureSpec
    from surgeon.data.features import compute_features, load_audio

    items = [i for i in load_index("epicsounds", epic).items if i.source == "P01_10"][:2]
    spec = FeatureSpec(max_frames=50)
    data = AudioDataset(items, spec)
    for n, item in enumerate(items):
        want = compute_features(load_audio(item.path, 16000, item.start, item.end), spec)
        assert torch.equal(data[n]["input_values"], want)
    assert not torch.equal(data[0]["input_values"], data[1]["input_values"])


def test_flat_audio_folder_and_a_cloned_annotation_repository(tmp_path):
    root = make_epic_sounds(tmp_path / "EPIC-SOUNDS", classes=2, videos=(2, 1))
    clone = root / "epic-sounds-annotations"
    clone.mkdir()
    for name in ("EPIC_Sounds_train.csv", "EPIC_Sounds_validation.csv"):
        (root / name).rename(clone / name)
    for wav in list((root / "audio").glob("*/*.wav")):
        wav.rename(tmp_path / wav.name)
    idx = load_index("epicsounds", root, audio_dir=str(tmp_path))  # <audio_dir>/<video_id>.wav
    assert idx.missing == [] and all(i.path.parent == tmp_path for i in idx.items)


def test_a_missing_video_is_listed(epic, tmp_path):
    root = make_epic_sounds(tmp_path / "e", classes=2, videos=(2, 1))
    (root / "audio" / "P01" / "P01_10.wav").unlink()
    idx = load_index("epicsounds", root)
    assert idx.missing == [str(root / "audio" / "P01_10.wav")] * 2  # both of its segments


@pytest.mark.parametrize("column, value, message", [
    ("start_timestamp", "1.5", "csv:3: timestamp '1.5' is not HH:mm:ss.SSS"),
    ("stop_timestamp", "00:00:00.050", "csv:3: P01_10_1 stops (00:00:00.050) before it starts"),
    ("class_id", "x", "csv:3: class_id 'x' is not a number"),
    ("class", "something else", "names two classes ('something else' and"),  # found at the class's next row
])
def test_bad_rows_are_one_line_errors(tmp_path, column, value, message):
    root = make_epic_sounds(tmp_path / "e", classes=2, videos=(2, 1))
    path = root / "EPIC_Sounds_train.csv"
    table = rows(path)
    table[1][column] = value
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    with pytest.raises(SurgeonError) as err:
        load_index("epicsounds", root)
    assert str(path) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_the_eight_column_csvs_read_too(tmp_path):
    """Earlier releases of the CSVs have no start_sample/stop_sample: the timestamps are what is read."""
    root = make_epic_sounds(tmp_path / "e", classes=2, videos=(2, 1))
    for name in ("EPIC_Sounds_train.csv", "EPIC_Sounds_validation.csv"):
        table = rows(root / name)
        with open(root / name, "w", newline="") as f:
            keep = [c for c in table[0] if c not in ("start_sample", "stop_sample")]
            writer = csv.DictWriter(f, fieldnames=keep, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(table)
    assert len(load_index("epicsounds", root).items) == 3 * 2


def test_a_segment_past_the_end_of_its_audio(tmp_path):
    from surgeon.data.features import load_audio

    path = tmp_path / "v.wav"
    sf.write(str(path), np.zeros(2400, dtype=np.float32), 24000)
    with pytest.raises(SurgeonError, match="starts at 1.000 s, after the end of the audio"):
        load_audio(path, 16000, 1.0, 2.0)
    assert load_audio(path, 16000, 0.05, 5.0).shape[0] == round(0.05 * 16000)  # cut at the end
