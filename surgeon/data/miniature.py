"""Miniature copies of every dataset layout: the real folder structure and metadata files with the
real column order, holding a few short synthetic clips per class (class c sounds like synthetic
class c). The tests read them with the real readers, and `surgeon validate` is checked on every
bundled recipe with its data.root pointed at one (`make_miniature(format, dir)`).

Each builder writes into `root` (created) and returns the path to use as data.root.
"""
from __future__ import annotations

import csv
from pathlib import Path

from surgeon.data.synthetic import SyntheticSource

ESC50_CATEGORIES = ["dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow"]
URBANSOUND8K_CLASSES = ["air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
                        "engine_idling", "gun_shot", "jackhammer", "siren", "street_music"]
SPEECHCOMMANDS_WORDS = ["backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
                        "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on",
                        "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual",
                        "wow", "yes", "zero"]
FLUENT_INTENTS = [  # (action, object, location, transcription)
    ("activate", "lights", "kitchen", "Turn on the kitchen lights"),
    ("deactivate", "music", "none", "Stop the music"),
    ("increase", "volume", "none", "Turn up the volume"),
    ("change language", "Chinese", "none", "Switch to Chinese"),
    ("bring", "newspaper", "none", "Bring me the newspaper"),
]
# EPIC-SOUNDS: (class_id, class, description) of a few of its 44 classes
EPIC_SOUNDS_CLASSES = [(0, "metal-only collision", "clang / clatter"), (1, "scrub / scrape / scour / wipe", "scrub"),
                       (4, "rustle", "paper rustle"), (5, "water", "tap running"), (7, "footstep", "footstep")]
# IEMOCAP emotion codes written per session; fru and xxx are not among the 4 classes
IEMOCAP_CODES = ["neu", "hap", "exc", "sad", "ang", "fru", "xxx"]


def _write(path: Path, source: SyntheticSource, label: int, n: int, channels: int = 1, subtype: str = "PCM_16"):
    import numpy as np
    import soundfile as sf

    wav = source.render_one(label, n)
    if channels > 1:
        wav = np.stack([wav * (0.8 + 0.2 * c) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, source.sample_rate, subtype=subtype)


def _source(num_classes: int, seconds: float, rate: int, seed: int = 0) -> SyntheticSource:
    return SyntheticSource(num_classes=max(num_classes, 2), seconds=seconds, sample_rate=rate, seed=seed)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_esc50(root, *, classes: int = 3, per_fold: int = 2, seconds: float = 0.3) -> Path:
    """5 folds x `classes` x `per_fold` clips at 44.1 kHz; meta/esc50.csv. Even targets are ESC-10."""
    root = Path(root)
    src = _source(classes, seconds, 44100)
    rows = []
    for fold in range(1, 6):
        for target in range(classes):
            for n in range(per_fold):
                clip_id = 100000 + 1000 * fold + 10 * target + n
                take = "A"
                name = f"{fold}-{clip_id}-{take}-{target}.wav"
                _write(root / "audio" / name, src, target, fold * 100 + n)
                rows.append([name, fold, target, ESC50_CATEGORIES[target], target % 2 == 0, clip_id, take])
    _write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
               rows)
    return root


def make_urbansound8k(root, *, classes: int = 3, per_fold: int = 2, seconds: float = 0.3) -> Path:
    """10 folds x `classes` x `per_fold` slices; sample rate and channels vary per file as in the real set;
    two slices of one recording (fsID) per class and fold."""
    root = Path(root)
    rates = (44100, 48000, 22050, 16000)
    rows = []
    for fold in range(1, 11):
        for class_id in range(classes):
            fs_id = 1000 * fold + class_id
            for n in range(per_fold):
                rate = rates[(fold + n) % len(rates)]
                name = f"{fs_id}-{class_id}-0-{n}.wav"
                _write(root / "audio" / f"fold{fold}" / name, _source(classes, seconds, rate), class_id, fold * 10 + n,
                       channels=1 + (fold + class_id + n) % 2)
                rows.append([name, fs_id, 0.5 * n, 0.5 * n + seconds, 1 + n % 2, fold, class_id,
                             URBANSOUND8K_CLASSES[class_id]])
    _write_csv(root / "metadata" / "UrbanSound8K.csv",
               ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], rows)
    return root


def make_speechcommands(root, *, words: int = 35, per_split: tuple[int, int, int] = (2, 1, 1),
                        seconds: float = 0.2) -> Path:
    """Every word folder with per_split (train, valid, test) clips, one speaker per clip; the two lists;
    `_background_noise_` with a noise file that is not a class."""
    root = Path(root)
    vocab = SPEECHCOMMANDS_WORDS[:words]
    src = _source(len(vocab), seconds, 16000)
    valid, test = [], []
    for label, word in enumerate(vocab):
        n = 0
        for split, count in zip(("train", "valid", "test"), per_split):
            for _ in range(count):
                rel = f"{word}/{n:08x}_nohash_0.wav"
                _write(root / rel, src, label, n)
                (valid if split == "valid" else test if split == "test" else []).append(rel)
                n += 1
    _write(root / "_background_noise_" / "white_noise.wav", src, 0, 999)
    (root / "validation_list.txt").write_text("".join(f"{r}\n" for r in valid))
    (root / "testing_list.txt").write_text("".join(f"{r}\n" for r in test))
    (root / "LICENSE").write_text("miniature copy for tests\n")
    return root


def make_fluent(root, *, intents: int = 5, per_split: tuple[int, int, int] = (3, 1, 1),
                seconds: float = 0.3) -> Path:
    """data/{train,valid,test}_data.csv (unnamed index column first) and wavs/speakers/<id>/<uuid>.wav."""
    root = Path(root)
    chosen = FLUENT_INTENTS[:intents]
    src = _source(len(chosen), seconds, 16000)
    header = ["", "path", "speakerId", "transcription", "action", "object", "location"]
    uid = 0
    for split, count in zip(("train", "valid", "test"), per_split):
        rows = []
        for label, (action, obj, location, text) in enumerate(chosen):
            for n in range(count):
                speaker = f"{split[:2]}Spk{n}"
                rel = f"wavs/speakers/{speaker}/{uid:08x}-0000-0000-0000-000000000000.wav"
                _write(root / rel, src, label, uid)
                rows.append([len(rows), rel, speaker, text, action, obj, location])
                uid += 1
        _write_csv(root / "data" / f"{split}_data.csv", header, rows)
    return root


def make_iemocap(root, *, sessions: int = 5, seconds: float = 0.3) -> Path:
    """Per session one dialog with one utterance per code in IEMOCAP_CODES (speakers alternating F/M),
    its EmoEvaluation file in the real line format, and a Categorical/ sub-folder that is not read."""
    root = Path(root)
    src = _source(4, seconds, 16000)
    label_of = {"neu": 0, "hap": 1, "exc": 1, "sad": 2, "ang": 3}
    for s in range(1, sessions + 1):
        dialog = f"Ses0{s}F_impro01"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for n, code in enumerate(IEMOCAP_CODES):
            utt = f"{dialog}_{'FM'[n % 2]}{n:03d}"
            _write(root / f"Session{s}" / "sentences" / "wav" / dialog / f"{utt}.wav", src, label_of.get(code, 0), n)
            start = 1.5 * n
            lines += [f"[{start:.4f} - {start + 1.2:.4f}]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]",
                      "C-E1:\tNeutral state;\t()", "A-E1:\tval 3; act 2; dom  2;\t()", ""]
        labels = root / f"Session{s}" / "dialog" / "EmoEvaluation"
        labels.mkdir(parents=True, exist_ok=True)
        (labels / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        (labels / "Categorical").mkdir(exist_ok=True)
        (labels / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{dialog}_F000 :Neutral state; ()\n")
    return root


def _timestamp(t: float) -> str:
    return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{t % 60:06.3f}"


def make_epic_sounds(root, *, classes: int = 4, videos: tuple[int, int] = (6, 2), seconds: float = 0.4,
                     gap: float = 0.1) -> Path:
    """`videos` (train, validation) videos of participants P01/P02, each one 24 kHz wav under
    audio/<participant>/ holding one segment per class (class c sounds like synthetic class c) after a
    gap; EPIC_Sounds_{train,validation}.csv with the official ten columns (timestamps and 24 kHz sample
    indices) and the unlabelled EPIC_Sounds_recognition_test_timestamps.csv. class_ids are the real,
    sparse ones (0, 1, 4, 5, 7), so the reader's renumbering is exercised."""
    import numpy as np
    import soundfile as sf

    root, rate = Path(root), 24000
    chosen = EPIC_SOUNDS_CLASSES[:classes]
    src = _source(len(chosen), seconds, rate)
    header = ["annotation_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp", "start_sample",
              "stop_sample", "description", "class", "class_id"]
    n_video, test_rows = 0, []
    for split, count in zip(("train", "validation"), videos):
        rows = []
        for _ in range(count):
            participant = f"P0{1 + n_video % 2}"
            video = f"{participant}_{10 + n_video:02d}"
            pieces, t = [], 0.0
            for label, (class_id, name, description) in enumerate(chosen):
                pieces += [np.zeros(int(round(gap * rate)), dtype=np.float32), src.render_one(label, n_video)]
                start = t + gap
                stop = start + seconds
                rows.append([f"{video}_{label}", participant, video, _timestamp(start), _timestamp(stop),
                             int(round(start * rate)), int(round(stop * rate)), description, name, class_id])
                test_rows.append(rows[-1][:7])
                t = stop
            path = root / "audio" / participant / f"{video}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), np.concatenate(pieces), rate, subtype="PCM_16")
            n_video += 1
        _write_csv(root / f"EPIC_Sounds_{split}.csv", header, rows)
    _write_csv(root / "EPIC_Sounds_recognition_test_timestamps.csv", header[:7], test_rows)
    return root


def make_manifest(root, *, classes: int = 3, per_class: int = 6, split: bool = True, folds: int = 0,
                  seconds: float = 0.3) -> Path:
    """root/manifest.csv (path,label[,split][,fold]) with clips under root/clips/; returns the CSV path.
    With split: per class the first items train, one valid, one test."""
    root = Path(root)
    src = _source(classes, seconds, 22050)
    header = ["path", "label"] + (["split"] if split else []) + (["fold"] if folds else [])
    rows = []
    for label in range(classes):
        for n in range(per_class):
            rel = f"clips/class{label}_{n}.wav"
            _write(root / rel, src, label, n)
            row = [rel, f"class{label}"]
            if split:
                row.append("test" if n == per_class - 1 else "valid" if n == per_class - 2 else "train")
            if folds:
                row.append(n % folds + 1)
            rows.append(row)
    _write_csv(root / "manifest.csv", header, rows)
    return root / "manifest.csv"


def make_folder(root, *, classes: int = 3, per_class: int = 10, seconds: float = 0.3) -> Path:
    """root/<label>/<n>.wav."""
    root = Path(root)
    src = _source(classes, seconds, 16000)
    for label in range(classes):
        for n in range(per_class):
            _write(root / f"label{label}" / f"{n}.wav", src, label, n)
    return root


_SENTENCES = ("printing in the only sense", "with which we are at present concerned", "please call stella",
              "ask her to bring these things", "differs from most if not from all the arts")


def make_ljspeech(root, *, utterances: int = 60, seconds: float = 0.3) -> Path:
    """root/wavs/LJnnn-nnnn.wav and metadata.csv (id|transcription|normalized transcription, no header).
    Enough utterances that the hashed 90/5/5 split leaves some in every part."""
    root = Path(root)
    src = _source(len(_SENTENCES), seconds, 22050)
    lines = []
    for n in range(utterances):
        uid = f"LJ{n // 10 + 1:03d}-{n % 10 + 1:04d}"
        _write(root / "wavs" / f"{uid}.wav", src, n % len(_SENTENCES), n)
        text = _SENTENCES[n % len(_SENTENCES)]
        lines.append(f"{uid}|{text.capitalize()}.|{text.capitalize()}.")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_vctk(root, *, speakers: int = 3, per_speaker: int = 20, seconds: float = 0.3) -> Path:
    """root/wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac and root/txt/<spk>/<spk>_<nnn>.txt."""
    root = Path(root)
    src = _source(len(_SENTENCES), seconds, 48000)
    for s in range(speakers):
        spk = f"p{225 + s}"
        for n in range(1, per_speaker + 1):
            text = root / "txt" / spk / f"{spk}_{n:03d}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text(_SENTENCES[n % len(_SENTENCES)].capitalize() + ".\n", encoding="utf-8")
            _write(root / "wav48_silence_trimmed" / spk / f"{spk}_{n:03d}_mic1.flac", src, n % len(_SENTENCES), n)
    return root


MINIATURES = {
    "esc50": make_esc50,
    "urbansound8k": make_urbansound8k,
    "speechcommands": make_speechcommands,
    "fluent": make_fluent,
    "iemocap": make_iemocap,
    "epicsounds": make_epic_sounds,
    "manifest": make_manifest,
    "folder": make_folder,
    "ljspeech": make_ljspeech,
    "vctk": make_vctk,
}


def make_miniature(format: str, root, **options) -> Path | None:
    """A miniature copy of `format`'s layout under `root`; the value for data.root (None: synthetic)."""
    if format == "synthetic":
        return None
    from surgeon.data.registry import did_you_mean
    from surgeon.errors import SurgeonError

    if format not in MINIATURES:
        raise SurgeonError(f"no miniature layout for format {format!r}{did_you_mean(format, MINIATURES)}")
    return MINIATURES[format](root, **options)
