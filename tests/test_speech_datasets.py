"""LJ Speech, VCTK and path,text manifest readers on miniature copies of their layouts."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from surgeon.errors import SurgeonError
from surgeon.speech import datasets as ds


def _wav(path, seconds=0.1, rate=22050):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * rate), dtype="float32"), rate)


def test_ljspeech(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    for uid in ("LJ001-0001", "LJ001-0002", "LJ002-0001"):
        _wav(root / "wavs" / f"{uid}.wav")
    (root / "metadata.csv").write_text(
        "LJ001-0001|Printing, in 1st sense|Printing, in first sense\n"
        "LJ001-0002|in being comparatively modern.|in being comparatively modern.\n"
        "LJ002-0001|raw only|\n"
        "LJ003-0001|no audio|no audio\n"
    )
    index = ds.read_ljspeech(root)
    assert [it.key for it in index.items] == ["wavs/LJ001-0001.wav", "wavs/LJ001-0002.wav", "wavs/LJ002-0001.wav"]
    assert index.items[0].text == "Printing, in first sense"  # the normalised column
    assert index.items[2].text == "raw only"  # falls back to the raw column when it is empty
    assert all(it.label == -1 and it.group in ds.SPLITS for it in index.items)
    assert index.items[0].source == "LJ001"
    assert index.missing == ["wavs/LJ003-0001.wav"]
    assert ds.read_ljspeech(root, column="raw").items[0].text == "Printing, in 1st sense"
    assert ds.load_pairs(root).name == "ljspeech"


def test_vctk(tmp_path):
    root = tmp_path / "VCTK-Corpus-0.92"
    for spk, n, audio in (("p225", 1, True), ("p225", 2, True), ("p315", 1, False)):
        t = root / "txt" / spk / f"{spk}_{n:03d}.txt"
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text(f"Please call Stella {n}.\n")
        if audio:
            _wav(root / "wav48_silence_trimmed" / spk / f"{spk}_{n:03d}_mic1.flac", rate=48000)
    index = ds.read_vctk(root)
    assert [it.key for it in index.items] == ["wav48_silence_trimmed/p225/p225_001_mic1.flac",
                                              "wav48_silence_trimmed/p225/p225_002_mic1.flac"]
    assert index.items[0].text == "Please call Stella 1." and index.items[0].source == "p225"
    assert index.missing == ["wav48_silence_trimmed/p315/p315_001_mic1.flac"]
    assert ds.load_pairs(root).name == "vctk"


def test_transcripts_manifest_and_synthetic(tmp_path):
    manifest = ds.make_synthetic_manifest(tmp_path / "syn", num=8, seed=1)
    index = ds.read_transcripts(manifest)
    assert len(index.items) == 8 and index.missing == []
    assert [it.group for it in index.items] == ["train"] * 6 + ["valid", "test"]
    assert all(set(it.text) <= set(ds.SYNTH_LETTERS + " ") and it.text for it in index.items)
    assert ds.read_transcripts(tmp_path / "syn").items == index.items  # a folder holding manifest.csv
    # reproducible per seed
    again = ds.make_synthetic_manifest(tmp_path / "syn2", num=8, seed=1)
    assert again.read_text() == manifest.read_text()
    a, _ = sf.read(tmp_path / "syn" / index.items[0].key)
    b, _ = sf.read(tmp_path / "syn2" / index.items[0].key)
    assert np.array_equal(a, b)


def test_hash_split_is_stable():
    assert ds.hash_split("wavs/LJ001-0001.wav") == ds.hash_split("wavs/LJ001-0001.wav")
    counts = {s: 0 for s in ds.SPLITS}
    for i in range(2000):
        counts[ds.hash_split(f"k{i}")] += 1
    assert 0.03 < counts["test"] / 2000 < 0.07 and 0.03 < counts["valid"] / 2000 < 0.07


def test_bad_layouts(tmp_path):
    with pytest.raises(SurgeonError, match="metadata.csv"):
        ds.read_ljspeech(tmp_path)
    with pytest.raises(SurgeonError, match="txt"):
        ds.read_vctk(tmp_path)
    bad = tmp_path / "m.csv"
    bad.write_text("file,label\na.wav,x\n")
    with pytest.raises(SurgeonError, match="path,text"):
        ds.read_transcripts(bad)
    bad.write_text("path,text,split\na.wav,x,holdout\n")
    with pytest.raises(SurgeonError, match="holdout"):
        ds.read_transcripts(bad)
