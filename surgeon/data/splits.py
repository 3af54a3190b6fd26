"""Train/valid/test splits from an index's groups, and few-shot subsets.

- official: the groups "train", "valid", "test" are the split; a missing validation set is carved
  from training data; items with no group (a manifest without a split column, a folder layout) are
  carved into test, valid and train.
- kfold: one split per fold, named after its test fold ("fold5" tests on fold 5). Validation is the
  previous fold cyclically when the index says "previous_fold" (the ESC-50 rotation of the papers:
  test 5 -> valid 4, train 1-3; test 1 -> valid 5, train 2-4; ...), otherwise carved from the
  training folds (UrbanSound8K). The test fold is never used for anything but testing.
- kfold-rest: AST's ESC-50 split (paper 004 uses it): one split per fold, training on every other
  fold, no validation; with nothing to select on, the last epoch is the one tested.
- leave-one-out: one split per group (IEMOCAP sessions), validation carved from the other groups;
  with IEMOCAP speaker groups, validation is the other speaker of the test speaker's session and
  training the other sessions. `fold=N` picks the N-th group here.

Carving is stratified by class, keeps every item of one source (recording, speaker) on one side,
and is reproducible from the seed.
"""
from __future__ import annotations

import random
from collections import defaultdict

from surgeon.data.types import DatasetIndex, Item, Split, group_sort_key
from surgeon.errors import SurgeonError

PROTOCOLS = ("official", "kfold", "kfold-rest", "leave-one-out")


def splits_for(
    index: DatasetIndex,
    protocol: str | None = None,
    fold: int | None = None,
    valid_from_train: float = 0.1,
    seed: int = 0,
) -> list[Split]:
    protocol = protocol or index.protocol
    if protocol not in PROTOCOLS:
        raise SurgeonError(f"data.protocol: unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if not 0 < valid_from_train < 1:
        raise SurgeonError(f"data.valid_from_train: must be between 0 and 1, got {valid_from_train}")
    if not index.items:
        raise SurgeonError(f"{index.root or index.name}: the dataset has no items")
    if protocol == "official":
        if fold is not None:
            raise SurgeonError(f"--fold: {index.name} uses its official split, which has no folds")
        return [_official(index, valid_from_train, seed)]
    groups = sorted({item.group for item in index.items}, key=group_sort_key)
    if None in groups:
        raise SurgeonError(f"data.protocol: {protocol} needs a fold for every item of {index.name}")
    if len(groups) < 2 or (index.kfold_valid == "previous_fold" and protocol == "kfold" and len(groups) < 3):
        raise SurgeonError(f"data.protocol: {index.name} has {len(groups)} fold(s), too few for {protocol}")
    splits = []
    for i, test_group in enumerate(groups):
        if fold is not None and not _picks(protocol, groups, test_group, fold):
            continue
        test = [it for it in index.items if it.group == test_group]
        rest = [it for it in index.items if it.group != test_group]
        if protocol == "kfold-rest":
            train, valid = rest, []
        elif protocol == "kfold" and index.kfold_valid == "previous_fold":
            valid_group = groups[i - 1]
            valid = [it for it in rest if it.group == valid_group]
            train = [it for it in rest if it.group != valid_group]
        elif index.kfold_valid == "session_partner":
            session = str(test_group)[:5]  # "Ses01"
            valid = [it for it in rest if str(it.group).startswith(session)]
            train = [it for it in rest if not str(it.group).startswith(session)]
        else:
            train, valid = carve(rest, valid_from_train, seed)
        name = f"fold{test_group}" if str(test_group).isdigit() else str(test_group)
        splits.append(Split(name=name, train=train, valid=valid, test=test))
    if fold is not None and not splits:
        raise SurgeonError(f"--fold: {index.name} has no fold {fold}; folds: {', '.join(map(str, groups))}")
    return splits


def _picks(protocol: str, groups: list, group, fold: int) -> bool:
    """kfold: fold 3 names group "3"; leave-one-out: the third group (Session3, or Ses02F of ten speakers)."""
    if protocol == "leave-one-out":
        return 1 <= fold <= len(groups) and groups[fold - 1] == group
    digits = "".join(ch for ch in str(group) if ch.isdigit())
    return digits != "" and int(digits) == int(fold)


def _official(index: DatasetIndex, valid_from_train: float, seed: int) -> Split:
    by_group = defaultdict(list)
    for item in index.items:
        by_group[item.group if item.group in ("train", "valid", "test") else None].append(item)
    train, valid, test, pool = by_group["train"], by_group["valid"], by_group["test"], by_group[None]
    if pool:  # unassigned items: test first, then validation, from the same pool
        rest, carved_test = carve(pool, valid_from_train, seed)
        rest, carved_valid = carve(rest, valid_from_train, seed + 1)
        train, valid, test = train + rest, valid + carved_valid, test + carved_test
    if not valid and train:
        train, valid = carve(train, valid_from_train, seed)
    for name, part in (("train", train), ("test", test)):
        if not part:
            raise SurgeonError(f"{index.root or index.name}: the official split has no {name} items")
    return Split(name="official", train=train, valid=valid, test=test)


def carve(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Split off about `fraction` of each class, whole sources at a time: (kept, carved)."""
    units = defaultdict(list)  # source -> items
    for item in items:
        units[item.source or item.key].append(item)
    by_class = defaultdict(list)
    for source in sorted(units):
        by_class[units[source][0].label].append(source)
    rng = random.Random(seed)
    carved_sources = set()
    for label in sorted(by_class):
        sources = by_class[label]
        if len(sources) < 2:
            continue  # a class with one source stays in training
        rng.shuffle(sources)
        want = fraction * sum(len(units[s]) for s in sources)
        taken = 0
        for s in sources[:-1]:  # always leave a source for training
            if taken >= want:
                break
            carved_sources.add(s)
            taken += len(units[s])
    kept = [it for it in items if (it.source or it.key) not in carved_sources]
    carved = [it for it in items if (it.source or it.key) in carved_sources]
    return kept, carved


def few_shot(items: list[Item], k: int, seed: int, num_classes: int | None = None) -> list[Item]:
    """Exactly k items of every class, drawn reproducibly from `seed` (the order of `items` kept).
    Classes 0..num_classes-1 must all have k items when num_classes is given."""
    if k < 1:
        raise SurgeonError(f"data.k: few-shot needs k >= 1, got {k}")
    by_class = defaultdict(list)
    for item in items:
        by_class[item.label].append(item)
    labels = range(num_classes) if num_classes is not None else sorted(by_class)
    rng = random.Random(seed)
    chosen = set()
    for label in labels:
        pool = sorted(by_class.get(label, []), key=lambda it: it.key)
        if len(pool) < k:
            raise SurgeonError(f"data.k: class {label} has {len(pool)} training items, fewer than k={k}")
        chosen.update(it.key for it in rng.sample(pool, k))
    return [it for it in items if it.key in chosen]
