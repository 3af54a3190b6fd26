"""IEMOCAP (`IEMOCAP_full_release/`): labels from Session{1..5}/dialog/EmoEvaluation/*.txt, audio at
Session{n}/sentences/wav/<dialog>/<utterance>.wav; 4 classes (neutral; happy + excited; sad; angry),
other emotions left out; leave-one-session-out folds.

speakers=True gives the ten-fold form of leave-one-session-out: each of the ten speakers is a test
fold in turn, validated on the other speaker of its session and trained on the four other sessions
(the papers' table counts 10 IEMOCAP folds)."""
from __future__ import annotations

import re
from pathlib import Path

from surgeon.data._common import make_index
from surgeon.data.types import DatasetIndex, Item
from surgeon.errors import SurgeonError

CLASSES = ["neutral", "happy", "sad", "angry"]
EMOTIONS = {"neu": 0, "hap": 1, "exc": 1, "sad": 2, "ang": 3}  # others (fru, sur, xxx, ...) are not used
# "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(?P<utt>Ses\w+)\s+(?P<emo>\w+)\s+\[")


def read_iemocap(root: Path, *, speakers: bool = False) -> DatasetIndex:
    sessions = sorted(p for p in root.glob("Session*") if p.is_dir() and p.name[7:].isdigit())
    if not sessions:
        raise SurgeonError(f"{root}: no Session1..Session5 folders (is this IEMOCAP_full_release?)")
    items = []
    for session in sessions:
        labels = session / "dialog" / "EmoEvaluation"
        if not labels.is_dir():
            raise SurgeonError(f"{labels}: label folder not found")
        for txt in sorted(labels.glob("*.txt")):
            if txt.name.startswith("."):
                continue
            for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
                m = LINE.match(line)
                if not m or m["emo"] not in EMOTIONS:
                    continue
                utt = m["utt"]
                dialog = utt.rsplit("_", 1)[0]
                rel = f"{session.name}/sentences/wav/{dialog}/{utt}.wav"
                speaker = utt[:5] + utt.rsplit("_", 1)[1][:1]  # Ses01 + F/M of the speaking actor
                items.append(Item(key=rel, label=EMOTIONS[m["emo"]], path=root / rel,
                                  group=speaker if speakers else session.name, source=speaker))
    return make_index("iemocap", root, list(CLASSES), items, "leave-one-out",
                      kfold_valid="session_partner" if speakers else "carve")
