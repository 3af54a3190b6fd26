"""Every dataset reader on a miniature copy of its layout: classes, groups, splits and their counts."""
from __future__ import annotations

import pytest

from surgeon.data import load_index, splits_for
from surgeon.data.miniature import (
    FLUENT_INTENTS, SPEECHCOMMANDS_WORDS, URBANSOUND8K_CLASSES, make_esc50, make_fluent, make_folder, make_iemocap,
    make_manifest, make_miniature, make_speechcommands, make_urbansound8k,
)
from surgeon.errors import SurgeonError


def test_esc50(tmp_path):
    root = make_esc50(tmp_path / "ESC-50-master", classes=3, per_fold=2)
    idx = load_index("esc50", root)
    assert idx.classes == ["dog", "rooster", "pig"]
    assert idx.protocol == "kfold" and idx.missing == []
    assert idx.counts() == {str(f): 6 for f in range(1, 6)}
    assert idx.class_counts() == {"dog": 10, "rooster": 10, "pig": 10}
    splits = splits_for(idx)
    assert [s.name for s in splits] == [f"fold{f}" for f in range(1, 6)]
    assert all(s.counts() == {"train": 18, "valid": 6, "test": 6} for s in splits)


def test_esc50_esc10_subset(tmp_path):
    idx = load_index("esc50", make_esc50(tmp_path, classes=3), esc10=True)
    assert idx.classes == ["dog", "pig"]  # targets 0 and 2, renumbered 0 and 1
    assert sorted({i.label for i in idx.items}) == [0, 1]


def test_urbansound8k(tmp_path):
    root = make_urbansound8k(tmp_path / "UrbanSound8K", classes=3, per_fold=2)
    idx = load_index("urbansound8k", root)
    assert idx.classes == URBANSOUND8K_CLASSES[:3]
    assert idx.counts() == {str(f): 6 for f in range(1, 11)}
    assert idx.items[0].key.startswith("audio/fold1/")
    splits = splits_for(idx)
    assert len(splits) == 10
    for s in splits:
        assert s.counts() == {"train": 48, "valid": 6, "test": 6}


def test_speechcommands(tmp_path):
    root = make_speechcommands(tmp_path / "speech_commands_v0.02", per_split=(2, 1, 1))
    idx = load_index("speechcommands", root)
    assert idx.classes == sorted(SPEECHCOMMANDS_WORDS) and len(idx.classes) == 35
    assert "_background_noise_" not in idx.classes
    assert not any("_background_noise_" in i.key for i in idx.items)
    (split,) = splits_for(idx)
    assert split.counts() == {"train": 70, "valid": 35, "test": 35}
    valid_list = set((root / "validation_list.txt").read_text().split())
    assert {i.key for i in split.valid} == valid_list


def test_speechcommands_lists_a_missing_clip(tmp_path):
    root = make_speechcommands(tmp_path, words=3)
    (root / "bed" / "00000003_nohash_0.wav").unlink()  # a test clip named in testing_list.txt
    idx = load_index("speechcommands", root)
    assert idx.missing == [str(root / "bed" / "00000003_nohash_0.wav")]
    assert splits_for(idx)[0].counts() == {"train": 6, "valid": 3, "test": 3}


def test_fluent(tmp_path):
    root = make_fluent(tmp_path / "fluent_speech_commands_dataset", intents=5, per_split=(3, 1, 1))
    idx = load_index("fluent", root)
    assert idx.classes == sorted(f"{a}|{o}|{l}" for a, o, l, _ in FLUENT_INTENTS)
    (split,) = splits_for(idx)
    assert split.counts() == {"train": 15, "valid": 5, "test": 5}
    item = split.train[0]
    assert item.text and idx.classes[item.label].split("|")[0] in {a for a, *_ in FLUENT_INTENTS}


def test_iemocap(tmp_path):
    root = make_iemocap(tmp_path / "IEMOCAP_full_release")
    idx = load_index("iemocap", root)
    assert idx.classes == ["neutral", "happy", "sad", "angry"]
    assert idx.protocol == "leave-one-out"
    # per session: neu, hap + exc (merged), sad, ang; fru and xxx left out
    assert idx.counts() == {f"Session{s}": 5 for s in range(1, 6)}
    assert idx.class_counts() == {"neutral": 5, "happy": 10, "sad": 5, "angry": 5}
    assert idx.items[0].path == root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    splits = splits_for(idx)
    assert [s.name for s in splits] == [f"Session{s}" for s in range(1, 6)]
    for s in splits:
        assert len(s.test) == 5 and {i.group for i in s.test} == {s.name}
        assert s.name not in {i.group for i in s.train + s.valid}
        assert len(s.train) + len(s.valid) == 20 and s.valid


def test_iemocap_ten_speaker_folds(tmp_path):
    idx = load_index("iemocap", make_iemocap(tmp_path), speakers=True)
    splits = splits_for(idx)
    assert [s.name for s in splits] == [f"Ses0{n}{g}" for n in range(1, 6) for g in "FM"]
    for s in splits:
        partner = s.name[:5] + ("M" if s.name[5] == "F" else "F")
        assert {i.group for i in s.test} == {s.name} and {i.group for i in s.valid} == {partner}
        assert not any(i.group.startswith(s.name[:5]) for i in s.train)
        assert len(s.train) == 20
    (third,) = splits_for(idx, fold=3)
    assert third.name == "Ses02F"


def test_iemocap_parses_the_documented_line(tmp_path):
    labels = tmp_path / "Session1" / "dialog" / "EmoEvaluation"
    labels.mkdir(parents=True)
    (labels / "Ses01F_impro01.txt").write_text(
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\nC-E2:\tNeutral;\t()\n"
        "[9.0 - 10.5]\tSes01F_impro01_M001\texc\t[3.0, 3.5, 3.0]\n"
        "[11.0 - 12.5]\tSes01F_impro01_F002\tsad\t[2.0, 2.0, 2.0]\n"
        "[13.0 - 14.5]\tSes01F_impro01_M003\tang\t[1.5, 4.0, 4.0]\n"
        "[15.0 - 16.5]\tSes01F_impro01_F004\tfru\t[2.0, 3.0, 3.0]\n"
    )
    idx = load_index("iemocap", tmp_path)
    assert [(i.key, i.label, i.group, i.source) for i in idx.items][:2] == [
        ("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav", 0, "Session1", "Ses01F"),
        ("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001.wav", 1, "Session1", "Ses01M")]
    assert [i.label for i in idx.items] == [0, 1, 2, 3]
    assert len(idx.missing) == 4  # no wav files written


def test_iemocap_needs_every_class(tmp_path):
    labels = tmp_path / "Session1" / "dialog" / "EmoEvaluation"
    labels.mkdir(parents=True)
    (labels / "a.txt").write_text("[1.0 - 2.0]\tSes01F_impro01_F000\tneu\t[2.5, 2.5, 2.5]\n")
    with pytest.raises(SurgeonError, match="class 'happy' has no audio files"):
        load_index("iemocap", tmp_path)


@pytest.mark.parametrize("split,folds,protocol", [(True, 0, "official"), (False, 3, "kfold"), (False, 0, "official")])
def test_manifest(tmp_path, split, folds, protocol):
    csv_path = make_manifest(tmp_path, classes=3, per_class=6, split=split, folds=folds)
    idx = load_index("manifest", csv_path)
    assert idx.classes == ["class0", "class1", "class2"] and idx.protocol == protocol
    assert idx.items[0].path == tmp_path / "clips" / "class0_0.wav"
    splits = splits_for(idx)
    if split:
        assert splits[0].counts() == {"train": 12, "valid": 3, "test": 3}
    elif folds:
        assert [s.name for s in splits] == ["fold1", "fold2", "fold3"]
        assert all(len(s.test) == 6 and len(s.train) + len(s.valid) == 12 for s in splits)
    else:  # carved: 10 % of each class to test, then to valid, whole items
        s = splits[0]
        assert len(s.test) == 3 and len(s.valid) == 3 and len(s.train) == 12
    assert load_index("manifest", tmp_path).items == idx.items  # a folder holding manifest.csv


def test_manifest_rejects_an_unknown_split(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,split\na.wav,x,holdout\n")
    with pytest.raises(SurgeonError, match="m.csv:2: split 'holdout'"):
        load_index("manifest", tmp_path / "m.csv")


@pytest.mark.parametrize("body, problem", [
    (b"path,label\na.wav\n", "manifest.csv:2: no value for column label"),
    (b"path,label\n\xff\xfe.wav,x\n", "manifest.csv: not UTF-8 text"),
])
def test_manifest_bad_rows_are_one_line_errors(tmp_path, body, problem):
    (tmp_path / "manifest.csv").write_bytes(body)
    with pytest.raises(SurgeonError, match=problem):
        load_index("manifest", tmp_path)


def test_folder(tmp_path):
    root = make_folder(tmp_path, classes=3, per_class=10)
    idx = load_index("folder", root)
    assert idx.classes == ["label0", "label1", "label2"] and len(idx.items) == 30
    s = splits_for(idx)[0]
    assert len(s.test) == 3 and len(s.valid) == 3 and len(s.train) == 24
    assert not {i.key for i in s.test} & {i.key for i in s.train + s.valid}


def test_folder_empty_class(tmp_path):
    root = make_folder(tmp_path, classes=2, per_class=2)
    (root / "zebra").mkdir()
    with pytest.raises(SurgeonError, match="class 'zebra' has no audio files"):
        load_index("folder", root)


def test_synthetic_index():
    idx = load_index("synthetic", None, num_classes=4, per_class=10, seed=3)
    assert len(idx.classes) == 4 and len(set(idx.classes)) == 4
    assert splits_for(idx)[0].counts() == {"train": 24, "valid": 8, "test": 8}
    assert idx.synthetic.seed == 3


def test_unknown_format_suggests_the_closest():
    with pytest.raises(SurgeonError, match=r"unknown format 'esc-50' \(did you mean 'esc50'\?\)") as e:
        load_index("esc-50", "/nowhere")
    assert "\n" not in str(e.value)


def test_unknown_option_and_missing_root(tmp_path):
    with pytest.raises(SurgeonError, match=r"data.options.per_clas: .*did you mean 'per_class'"):
        load_index("synthetic", None, per_clas=3)
    with pytest.raises(SurgeonError, match=r"data.options.esc10: expected true or false, got 'false'"):
        load_index("esc50", tmp_path, esc10="false")
    with pytest.raises(SurgeonError, match="data.options.per_class: expected an integer"):
        load_index("synthetic", None, per_class=2.5)
    with pytest.raises(SurgeonError, match="dataset root not found"):
        load_index("esc50", tmp_path / "ESC-50-master")
    with pytest.raises(SurgeonError, match="needs the dataset root"):
        load_index("fluent", None)


def test_metadata_without_its_columns(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("filename,fold\n1-1-A-0.wav,1\n")
    with pytest.raises(SurgeonError, match="missing column"):
        load_index("esc50", tmp_path)


def test_make_miniature_dispatch(tmp_path):
    assert make_miniature("synthetic", tmp_path) is None
    root = make_miniature("esc50", tmp_path / "e")
    assert load_index("esc50", root).num_classes == 3
    with pytest.raises(SurgeonError, match="did you mean 'fluent'"):
        make_miniature("fluen", tmp_path)
