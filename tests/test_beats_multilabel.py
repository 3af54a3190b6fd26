"""AudioSet-style multi-label evaluation of a BEATs checkpoint's own predictor: sigmoid probabilities
and mAP (surgeon/beats/multilabel.py), mAP checked against hand computations."""
from __future__ import annotations

import numpy as np
import pytest

from surgeon.beats.multilabel import average_precision, mean_average_precision
from surgeon.errors import SurgeonError


def test_average_precision_by_hand():
    # ranks 1 and 3 are positive: (1/1 + 2/3) / 2
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # a tie is one step: at 0.5, 1 of 3 is positive (recall 1/2); at 0.1, 2 of 4 (recall 1)
    assert average_precision([0.9, 0.5, 0.5, 0.1], [0, 1, 0, 1]) == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 4)
    assert average_precision([0.1, 0.2, 0.3], [0, 0, 1]) == pytest.approx(1.0)
    with pytest.raises(SurgeonError):
        average_precision([0.1, 0.2], [0, 0])


def test_map_averages_classes_with_positives():
    probs = np.array([[0.9, 0.2, 0.5], [0.8, 0.7, 0.5], [0.7, 0.1, 0.5], [0.6, 0.3, 0.5]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    doc = mean_average_precision(probs, targets)
    # class 0: 5/6 (above); class 1: positives ranked 1 and 2 -> 1; class 2 has no positive: left out
    assert doc["ap"][:2] == pytest.approx([5 / 6, 1.0]) and doc["ap"][2] is None
    assert doc["mAP"] == pytest.approx((5 / 6 + 1.0) / 2)
    assert doc["classes_scored"] == 2 and doc["classes_without_positives"] == 1


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    from surgeon.beats.checkpoint import load_pt
    from surgeon.beats.fixtures import write_beats_checkpoint
    from surgeon.speech.datasets import load_pairs, make_synthetic_manifest

    root = tmp_path_factory.mktemp("beats_ml")
    pt = write_beats_checkpoint(root / "BEATs_ft.pt", "small", predictor_class=4)
    clips = [it.path for it in load_pairs(make_synthetic_manifest(root / "clips", num=8, seed=0)).items]
    rng = np.random.default_rng(0)
    labels = [sorted({int(c) for c in rng.integers(0, 4, size=int(rng.integers(1, 3)))}) for _ in clips]
    manifest = root / "eval.csv"
    manifest.write_text("path,labels\n" + "".join(
        f'{c},"{",".join(f"/m/fixture{k:04d}" for k in ks)}"\n' for c, ks in zip(clips, labels)))
    return {"model": load_pt(pt, allow_pickle=True), "clips": clips, "labels": labels, "manifest": manifest}


def test_evaluate_multilabel_matches_the_authors_probabilities(finetuned):
    import soundfile as sf
    import torch

    from surgeon.beats.multilabel import evaluate_multilabel

    model = finetuned["model"]
    doc = evaluate_multilabel(model, finetuned["manifest"], batch_size=1)
    with torch.no_grad():  # the authors' interface: sigmoid probabilities of each clip alone
        probs = np.stack([model.extract_features(torch.from_numpy(sf.read(str(c), dtype="float32")[0])[None])[0][0]
                          .numpy() for c in finetuned["clips"]])
    targets = np.zeros((len(probs), 4), dtype=bool)
    for row, ks in enumerate(finetuned["labels"]):
        targets[row, ks] = True
    want = mean_average_precision(probs, targets)
    assert doc["clips"] == 8 and doc["mAP"] == pytest.approx(want["mAP"], abs=1e-6)
    assert 0.0 < doc["mAP"] <= 1.0
    batched = evaluate_multilabel(model, finetuned["manifest"], batch_size=4)  # padded batches run too
    assert batched["clips"] == 8 and 0.0 < batched["mAP"] <= 1.0


def test_multilabel_refusals(finetuned, tmp_path):
    from surgeon.beats.fixtures import build_tiny
    from surgeon.beats.multilabel import evaluate_multilabel

    with pytest.raises(SurgeonError, match="label_dict"):
        evaluate_multilabel(build_tiny(), finetuned["manifest"])  # no predictor, no labels
    bad = tmp_path / "bad.csv"
    bad.write_text(f'path,labels\n{finetuned["clips"][0]},/m/unknown\n')
    with pytest.raises(SurgeonError, match="not one of the checkpoint's classes"):
        evaluate_multilabel(finetuned["model"], bad)
    (tmp_path / "nolabels.csv").write_text(f'path\n{finetuned["clips"][0]}\n')
    with pytest.raises(SurgeonError, match="no `labels` column"):
        evaluate_multilabel(finetuned["model"], tmp_path / "nolabels.csv")


def test_cli_eval_audioset(finetuned, tmp_path, cli):
    import json

    from surgeon.beats.fixtures import write_beats_checkpoint
    from surgeon.beats.multilabel import evaluate_multilabel

    pt = write_beats_checkpoint(tmp_path / "ft.pt", "small", predictor_class=4)

    def invoke(*args):
        r = cli(*args)
        return r.code, r.out, r.err

    out = tmp_path / "metrics.json"
    code, _, err = invoke("eval-audioset", pt, "--clips", finetuned["manifest"], "--allow-pickle", "--out", out)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["mAP"] == pytest.approx(evaluate_multilabel(finetuned["model"], finetuned["manifest"])["mAP"])
    code, _, err = invoke("eval-audioset", pt, "--clips", finetuned["manifest"], "--out", tmp_path / "m2.json")
    assert code == 2 and "pickle" in err and len(err.strip().splitlines()) == 1, err
    plain = write_beats_checkpoint(tmp_path / "plain.pt", "small")
    code, _, err = invoke("eval-audioset", plain, "--clips", finetuned["manifest"], "--allow-pickle")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m2.json").exists()
