"""Fold rotations, validation carving and few-shot draws."""
from __future__ import annotations

from collections import Counter

import pytest

from surgeon.data import few_shot, load_index, splits_for
from surgeon.data.miniature import make_esc50, make_urbansound8k
from surgeon.data.splits import carve
from surgeon.data.types import DatasetIndex, Item
from surgeon.errors import SurgeonError

# datasets.md: train/valid/test per rotation
ESC50_ROTATION = [([1, 2, 3], 4, 5), ([2, 3, 4], 5, 1), ([3, 4, 5], 1, 2), ([4, 5, 1], 2, 3), ([5, 1, 2], 3, 4)]


def folds_of(items):
    return sorted({int(i.group) for i in items})


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    return load_index("esc50", make_esc50(tmp_path_factory.mktemp("esc") / "ESC-50-master"))


@pytest.fixture(scope="module")
def us8k(tmp_path_factory):
    return load_index("urbansound8k", make_urbansound8k(tmp_path_factory.mktemp("us") / "UrbanSound8K"))


def test_esc50_rotation_is_the_papers(esc50):
    got = {s.name: (folds_of(s.train), folds_of(s.valid), folds_of(s.test)) for s in splits_for(esc50)}
    want = {f"fold{test}": (sorted(train), [valid], [test]) for train, valid, test in ESC50_ROTATION}
    assert got == want


def test_fold_option_picks_the_test_fold(esc50):
    (s,) = splits_for(esc50, fold=1)
    assert (folds_of(s.train), folds_of(s.valid), folds_of(s.test)) == ([2, 3, 4], [5], [1])
    with pytest.raises(SurgeonError, match="no fold 7"):
        splits_for(esc50, fold=7)


def test_urbansound8k_validation_comes_from_training_folds(us8k):
    splits = splits_for(us8k)
    assert [s.name for s in splits] == [f"fold{f}" for f in range(1, 11)]
    for f, s in enumerate(splits, start=1):
        assert folds_of(s.test) == [f]
        assert f not in folds_of(s.valid) and f not in folds_of(s.train)
        assert s.valid and set(folds_of(s.valid)) <= set(range(1, 11)) - {f}
        # every class in validation, slices of one recording never on both sides
        assert {i.label for i in s.valid} == {0, 1, 2}
        assert not {i.source for i in s.valid} & {i.source for i in s.train}
        keys = [i.key for i in s.train + s.valid + s.test]
        assert len(keys) == len(set(keys)) == len(us8k.items)


def test_carving_depends_on_the_seed_only(us8k):
    a = splits_for(us8k, fold=3, seed=0)[0]
    b = splits_for(us8k, fold=3, seed=0)[0]
    c = splits_for(us8k, fold=3, seed=1)[0]
    assert [i.key for i in a.valid] == [i.key for i in b.valid]
    assert [i.key for i in a.valid] != [i.key for i in c.valid]


def test_carve_fraction():
    items = [Item(key=f"c{c}/{n}", label=c, path=None, group="train") for c in range(2) for n in range(50)]
    kept, carved = carve(items, 0.2, seed=0)
    assert Counter(i.label for i in carved) == {0: 10, 1: 10}
    assert len(kept) == 80


def test_official_split_carves_missing_validation():
    items = [Item(key=f"{c}/{n}", label=c, path=None, group="test" if n < 2 else "train")
             for c in range(2) for n in range(12)]
    idx = DatasetIndex(name="x", root=None, classes=["a", "b"], items=items, protocol="official")
    (s,) = splits_for(idx, valid_from_train=0.1)
    assert len(s.test) == 4 and len(s.valid) == 2 and len(s.train) == 18
    with pytest.raises(SurgeonError, match="has no folds"):
        splits_for(idx, fold=1)


def test_few_shot_exactly_k_per_class_reproducible(us8k):
    train = splits_for(us8k, fold=1)[0].train
    a = few_shot(train, k=3, seed=0)
    assert Counter(i.label for i in a) == {0: 3, 1: 3, 2: 3}
    assert [i.key for i in few_shot(train, k=3, seed=0)] == [i.key for i in a]
    draws = {tuple(i.key for i in few_shot(train, k=3, seed=s)) for s in range(5)}
    assert len(draws) == 5  # different seeds draw different subsets
    assert set(i.key for i in a) <= {i.key for i in train}


def test_few_shot_needs_k_per_class(esc50):
    train = splits_for(esc50, fold=5)[0].train  # 6 per class
    assert len(few_shot(train, k=6, seed=0)) == 18
    with pytest.raises(SurgeonError, match="fewer than k=7"):
        few_shot(train, k=7, seed=0)
    with pytest.raises(SurgeonError, match="class 3 has 0"):
        few_shot(train, k=1, seed=0, num_classes=4)


def test_esc50_ast_split_trains_on_the_other_four_folds(esc50):
    """data.protocol = "kfold-rest" (AST's split, paper 004): test fold k, train on the rest, no validation."""
    got = {s.name: (folds_of(s.train), folds_of(s.valid), folds_of(s.test))
           for s in splits_for(esc50, protocol="kfold-rest")}
    assert got == {f"fold{k}": ([f for f in range(1, 6) if f != k], [], [k]) for k in range(1, 6)}
    (s,) = splits_for(esc50, protocol="kfold-rest", fold=2)
    assert folds_of(s.test) == [2] and not s.valid
