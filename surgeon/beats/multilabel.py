"""AudioSet-style multi-label evaluation of a BEATs checkpoint's own predictor (paper 003; the
fine-tuned BEATs checkpoints predict AudioSet's 527 classes).

Each clip has a set of labels (AudioSet label ids, "/m/..."); the checkpoint's `label_dict` maps class
index -> label id. The model's scores are sigmoid probabilities (the authors' extract_features output
for a fine-tuned checkpoint). The metric is AudioSet's mAP: the mean over classes of the average
precision of ranking the clips by that class's probability,

    AP = sum_n (R_n - R_{n-1}) P_n     over the distinct score thresholds, highest first

(precision P_n and recall R_n of the clips scoring at least threshold n; tied scores form one step), over
the classes with at least one positive clip (AP is undefined without one, so such classes are left out
and counted).

The clips: a CSV with `path` (relative to the CSV) and `labels` (label ids separated by commas, as
AudioSet's positive_labels column; quote the field). No torch at import.
"""
from __future__ import annotations

import csv
from pathlib import Path

from surgeon.errors import SurgeonError


def average_precision(scores, positive) -> float:
    """AP of one class: scores [clips] (higher = more likely), positive [clips] bool; needs a positive."""
    import numpy as np

    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if not positive.any():
        raise SurgeonError("average precision needs at least one positive clip")
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    tp = np.cumsum(p)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last clip of each distinct score
    precision, recall = tp[last] / (last + 1), tp[last] / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(probs, targets) -> dict:
    """probs, targets [clips, classes] -> {"mAP", "ap" (per class, None without positives),
    "classes_scored", "classes_without_positives"}."""
    import numpy as np

    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=bool)
    if probs.shape != targets.shape or probs.ndim != 2:
        raise SurgeonError(f"scores {list(probs.shape)} and targets {list(targets.shape)}: expected [clips, classes] both")
    ap = [average_precision(probs[:, c], targets[:, c]) if targets[:, c].any() else None
          for c in range(probs.shape[1])]
    scored = [a for a in ap if a is not None]
    if not scored:
        raise SurgeonError("mAP: no class has a positive clip")
    return {"mAP": float(np.mean(scored)), "ap": ap, "classes_scored": len(scored),
            "classes_without_positives": len(ap) - len(scored)}


def read_multilabel_manifest(path, label_dict: dict) -> tuple[list[Path], list[list[int]]]:
    """(clip paths, class indices per clip) from a `path,labels` CSV, through label_dict (index -> id)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SurgeonError(f"{path}: no such file (expected a CSV with `path` and `labels` columns)")
    index = {str(v): int(k) for k, v in label_dict.items()}
    clips, labels = [], []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "labels"} - set(reader.fieldnames or [])
        if missing:
            raise SurgeonError(f"{path}: no `{sorted(missing)[0]}` column (columns: {', '.join(reader.fieldnames or []) or 'none'})")
        for n, row in enumerate(reader, 2):
            clip = Path(row["path"].strip()).expanduser()
            clip = clip if clip.is_absolute() else path.parent / clip
            if not clip.is_file():
                raise SurgeonError(f"{path}: line {n}: audio file {clip} not found")
            ids = [x.strip() for x in (row["labels"] or "").split(",") if x.strip()]
            unknown = [x for x in ids if x not in index]
            if unknown:
                raise SurgeonError(f"{path}: line {n}: label {unknown[0]!r} is not one of the checkpoint's classes")
            clips.append(clip)
            labels.append([index[x] for x in ids])
    if not clips:
        raise SurgeonError(f"{path}: no clips listed")
    return clips, labels


def predict_probabilities(model, clips, batch_size: int = 8):
    """[clips, classes] sigmoid probabilities of the model's predictor, batches padded with the padding mask."""
    import numpy as np
    import torch

    from surgeon.beats.frontend import SAMPLE_RATE
    from surgeon.data.features import load_audio

    if getattr(model, "predictor", None) is None:
        raise SurgeonError("multi-label evaluation needs a fine-tuned BEATs checkpoint (one with a predictor)")
    rows = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(clips), batch_size):
            waves = [torch.as_tensor(load_audio(c, SAMPLE_RATE), dtype=torch.float32).reshape(-1)
                     for c in clips[i: i + batch_size]]
            n = max(w.numel() for w in waves)
            wav, pad = torch.zeros(len(waves), n), torch.ones(len(waves), n, dtype=torch.bool)
            for j, w in enumerate(waves):
                wav[j, : w.numel()], pad[j, : w.numel()] = w, False
            rows.append(torch.sigmoid(model(input_values=wav, padding_mask=pad).logits.float()).numpy())
    return np.concatenate(rows)


def evaluate_multilabel(model, manifest, batch_size: int = 8) -> dict:
    """mAP of a fine-tuned BEATs model's own predictor on the clips of `manifest` (see the module doc)."""
    import numpy as np

    if not getattr(model, "label_dict", None):
        raise SurgeonError("multi-label evaluation needs the checkpoint's label_dict (class index -> AudioSet label id)")
    clips, labels = read_multilabel_manifest(manifest, model.label_dict)
    probs = predict_probabilities(model, clips, batch_size)
    targets = np.zeros(probs.shape, dtype=bool)
    for row, classes in enumerate(labels):
        targets[row, classes] = True
    return {"clips": len(clips), **mean_average_precision(probs, targets)}
