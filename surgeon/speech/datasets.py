"""Transcribed speech: LJ Speech, VCTK, a `path,text` manifest, and a synthetic generator for tests.

Formats (the names for `data.format` in a recipe, registered in surgeon.data.registry.DATASETS):
"ljspeech", "vctk", "transcripts" (the path,text manifest). Each reader returns the data layer's `DatasetIndex` of `Item`s with `text` set and `label = -1`
(transcription, no classes), so the training loop and `select-layers` consume them like any other
dataset. Neither corpus has an official split; surgeon assigns one deterministically from a CRC-32
of the item key (5% test, 5% validation, 90% training) so that every run and every user sees the
same split; a manifest may name its own in a `split` column (train / valid / test).

Layouts (datasets.md):
  LJ Speech   LJSpeech-1.1/metadata.csv, pipe-separated `id|transcription|normalized`, no header,
              audio in wavs/<id>.wav. The normalised column (numbers spelt out) is the transcript.
  VCTK        VCTK-Corpus-0.92/wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac with the text in
              txt/<spk>/<spk>_<nnn>.txt; utterances without mic1 audio (p315 has no audio at all)
              are listed in `missing`.
  manifest    CSV with a header and columns `path,text` (paths relative to the CSV), optional `split`.
"""
from __future__ import annotations

import csv
import math
import os
import zlib
from pathlib import Path

from surgeon.data.types import DatasetIndex, Item
from surgeon.errors import SurgeonError

SPLITS = ("train", "valid", "test")


def hash_split(key: str) -> str:
    """train / valid / test from a stable hash of the key (90 / 5 / 5)."""
    bucket = zlib.crc32(key.encode()) % 20
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


def _root(root, what: str) -> Path:
    if root is None:
        raise SurgeonError(f"data.root: the {what} reader needs the dataset directory")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SurgeonError(f"{root}: no such directory ({what})")
    return root


def read_ljspeech(root, *, column: str = "normalized") -> DatasetIndex:
    """LJ Speech from its metadata.csv; `column` "normalized" (default) or "raw"."""
    root = _root(root, "ljspeech")
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise SurgeonError(f"{meta}: missing (expected the LJ Speech layout: metadata.csv and wavs/)")
    if column not in ("normalized", "raw"):
        raise SurgeonError(f"data.options.column: expected 'normalized' or 'raw', got {column!r}")
    items, missing = [], []
    with meta.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split("|")
            if len(parts) < 2:
                raise SurgeonError(f"{meta}:{n}: expected 'id|transcription|normalized transcription'")
            uid = parts[0]
            text = parts[2] if column == "normalized" and len(parts) > 2 and parts[2] else parts[1]
            key = f"wavs/{uid}.wav"
            path = root / key
            if not path.is_file():
                missing.append(key)
                continue
            items.append(Item(key=key, label=-1, path=path, group=hash_split(key), text=text,
                              source=uid.split("-")[0]))
    return _index("ljspeech", root, items, missing)


def read_vctk(root, *, mic: str = "mic1") -> DatasetIndex:
    """VCTK 0.92: every transcript in txt/ paired with its <mic> recording."""
    root = _root(root, "vctk")
    txt, wav = root / "txt", root / "wav48_silence_trimmed"
    for d in (txt, wav):
        if not d.is_dir():
            raise SurgeonError(f"{d}: missing (expected the VCTK-Corpus-0.92 layout: txt/ and wav48_silence_trimmed/)")
    items, missing = [], []
    for tfile in sorted(txt.glob("*/*.txt")):
        speaker, stem = tfile.parent.name, tfile.stem
        key = f"wav48_silence_trimmed/{speaker}/{stem}_{mic}.flac"
        path = root / key
        if not path.is_file():
            missing.append(key)
            continue
        text = tfile.read_text(encoding="utf-8", errors="replace").strip()
        items.append(Item(key=key, label=-1, path=path, group=hash_split(key), text=text, source=speaker))
    return _index("vctk", root, items, missing)


def read_transcripts(root) -> DatasetIndex:
    """A CSV with columns path,text (optional split); `root` is the CSV file or a directory holding
    manifest.csv. (surgeon.data's "manifest" format is for labelled clips: path,label.)"""
    path = Path(root).expanduser() if root is not None else None
    if path is not None and path.is_dir():
        path = path / "manifest.csv"
    if path is None or not path.is_file():
        raise SurgeonError(f"{path}: no such manifest (a CSV with columns path,text)")
    base = path.parent
    items, missing = [], []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if "path" not in cols or "text" not in cols:
            raise SurgeonError(f"{path}: needs a header with columns path,text (found {','.join(cols) or 'none'})")
        for n, row in enumerate(reader, 2):
            rel = (row.get("path") or "").strip()
            if not rel:
                raise SurgeonError(f"{path}:{n}: empty path")
            split = (row.get("split") or "").strip() or hash_split(rel)
            if split not in SPLITS:
                raise SurgeonError(f"{path}:{n}: split {split!r} is not one of {', '.join(SPLITS)}")
            audio = (base / rel) if not os.path.isabs(rel) else Path(rel)
            if not audio.is_file():
                missing.append(rel)
                continue
            items.append(Item(key=rel, label=-1, path=audio, group=split, text=row.get("text") or ""))
    return _index("transcripts", base, items, missing)


def _index(name, root, items, missing) -> DatasetIndex:
    return DatasetIndex(name=name, root=root, classes=[], items=items, protocol="official", missing=missing)


def load_pairs(path) -> DatasetIndex:
    """Paired audio and text for select-layers: a manifest CSV, or an LJ Speech or VCTK directory."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / "metadata.csv").is_file():
        return read_ljspeech(p)
    if p.is_dir() and (p / "wav48_silence_trimmed").is_dir():
        return read_vctk(p)
    return read_transcripts(p)


# -- synthetic speech ----------------------------------------------------------------------------

SYNTH_LETTERS = "ABCDE"


def make_synthetic_manifest(out, *, num: int = 32, seed: int = 0, letters: str = SYNTH_LETTERS,
                            letter_seconds: float = 0.06, max_words: int = 3, max_letters: int = 3,
                            sample_rate: int = 16000) -> Path:
    """Write `num` speech-like clips and their manifest.csv into directory `out`.

    Every letter is a tone of its own pitch and loudness (a harmonic pair, not a pure sine) lasting
    `letter_seconds`; a short silence separates letters and a longer one words. A model that learns
    the tones can transcribe the clips exactly, which is what the CTC test needs. Splits: the first
    three quarters train, then valid and test in equal parts."""
    import numpy as np
    import soundfile as sf

    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(letter_seconds * sample_rate)) / sample_rate
    envelope = np.sin(np.pi * t / letter_seconds) ** 2
    # letters differ in pitch (200 Hz to 3.2 kHz) and in loudness, so even a tiny model hears them apart
    tones = {ch: amp * envelope * (np.sin(2 * math.pi * f * t) + 0.3 * np.sin(4 * math.pi * f * t))
             for ch, f, amp in zip(letters, np.geomspace(200, 3200, len(letters)), np.linspace(0.9, 0.2, len(letters)))}
    gap, space = np.zeros(int(0.015 * sample_rate)), np.zeros(int(0.06 * sample_rate))
    rows = []
    for n in range(num):
        words = ["".join(rng.choice(list(letters), size=rng.integers(1, max_letters + 1)))
                 for _ in range(rng.integers(1, max_words + 1))]
        pieces = [space]
        for w in words:
            for ch in w:
                pieces += [tones[ch], gap]
            pieces.append(space)
        audio = np.concatenate(pieces) + 0.01 * rng.standard_normal(sum(len(p) for p in pieces))
        rel = f"clips/{n:04d}.wav"
        sf.write(out / rel, audio.astype("float32"), sample_rate)
        split = "train" if n < num * 3 // 4 else ("valid" if n < num * 7 // 8 else "test")
        rows.append((rel, " ".join(words), split))
    with (out / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "text", "split"])
        w.writerows(rows)
    return out / "manifest.csv"


# data.format name -> reader (for surgeon.data.registry.DATASETS)
READERS = {"ljspeech": read_ljspeech, "vctk": read_vctk, "transcripts": read_transcripts}
