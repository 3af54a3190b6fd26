"""Training BEATs from a recipe: `model.ref` names an authors' .pt (refused unless `model.allow_pickle`), a new
Linear head over the mean of the kept tokens for the dataset's classes, softmax cross-entropy; a tiny
ESC-50-layout run beats chance."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    from surgeon.data.miniature import make_esc50

    return make_esc50(tmp_path_factory.mktemp("esc") / "ESC-50-master", classes=3, per_fold=4, seconds=1.0)


def recipe(tmp_path, pt, esc50, allow_pickle=True, method="linear"):
    path = tmp_path / "r.toml"
    path.write_text(f"""
[model]
ref = "{pt}"
allow_pickle = {str(allow_pickle).lower()}
[method]
name = "{method}"
[data]
format = "esc50"
root = "{esc50}"
fold = 1
[train]
epochs = 3
batch_size = 8
lr = 1e-2
seed = 0
""")
    return path


def test_a_pt_trains_on_esc50_above_chance(tmp_path, esc50, cli):
    from surgeon.beats.fixtures import write_beats_checkpoint

    pt = write_beats_checkpoint(tmp_path / "BEATs.pt")  # self-supervised: no predictor, a new head is made
    before = pt.read_bytes()
    r = cli("train", recipe(tmp_path, pt, esc50), "--out", tmp_path / "run")
    assert r.code == 0, r.err
    cell = json.loads((tmp_path / "run" / "results.json").read_text())["cells"][0]
    assert cell["test"]["accuracy"] > 1 / 3 + 0.2  # 3 classes
    assert pt.read_bytes() == before  # the input is never changed


def test_a_pt_ref_is_refused_without_allow_pickle(tmp_path, esc50, cli):
    from surgeon.beats.fixtures import write_beats_checkpoint

    pt = write_beats_checkpoint(tmp_path / "BEATs.pt")
    r = cli("train", recipe(tmp_path, pt, esc50, allow_pickle=False), "--out", tmp_path / "run")
    assert r.code == 2 and "--allow-pickle" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_new_head_is_a_linear_over_the_mean_of_the_kept_tokens():
    import torch

    from surgeon.beats.fixtures import build_tiny
    from surgeon.train.tasks import get_task

    model = build_tiny()
    get_task("classification").prepare(model, ["a", "b", "c", "d"])
    assert model.predictor.out_features == 4 and model.config.predictor_class == 4 and model.config.finetuned_model
    wav = 0.1 * torch.randn(2, 16_000, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 16_000, dtype=torch.bool)
    mask[1, 9_000:] = True
    with torch.no_grad():
        out = model(input_values=wav, padding_mask=mask)
        kept = ~out.padding_mask
        for b in range(2):
            mean = out.last_hidden_state[b][kept[b]].mean(0)
            torch.testing.assert_close(out.logits[b], model.predictor(mean), atol=1e-5, rtol=1e-5)
