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


def test_paper_003_aec_recipes_follow_the_paper():
    """Paper 003's AEC rows: ViT -> BEATs on ESC-50; zero-shot lam 0.1 on all layers (Table 1) and on 4-11
    (Table 2); FT, MAM + FT, L-MAM + FT with AdamW 1e-3, 3 epochs, batch 32, over seeds 0-2 (Table 5)."""
    from surgeon.recipes.load import load_recipe
    from surgeon_recipes.generate import all_recipes

    aec = {k: v for k, v in all_recipes().items() if k.startswith("aec-")}
    assert sorted(aec) == ["aec-ft-esc50", "aec-lmam-ft-esc50", "aec-mam-4-11-esc50", "aec-mam-esc50",
                           "aec-mam-ft-esc50"]
    for name, doc in aec.items():
        assert doc["model"]["allow_pickle"] and doc["model"]["ref"].endswith("BEATs_iter3.pt"), name
        assert doc["train"]["lr"] == 1e-3 and doc["train"]["epochs"] == 3 and doc["train"]["batch_size"] == 32
        assert doc["data"]["format"] == "esc50" and "Table 5" in " ".join(doc["_comment"]), name
        assert (doc["train"].get("seeds") == [0, 1, 2]) == name.endswith("ft-esc50"), name
        assert load_recipe(name, check_paths=False).model.allow_pickle
    merges = {k: (v.get("merge") or {}) for k, v in aec.items()}
    assert (merges["aec-mam-esc50"]["layers"], merges["aec-mam-esc50"]["init_lam"]) == ("all", 0.1)
    for name in ("aec-mam-4-11-esc50", "aec-mam-ft-esc50"):
        assert (merges[name]["layers"], merges[name]["init_lam"], merges[name]["learnable"]) == (list(range(4, 12)), 0.1, False)
    assert merges["aec-lmam-ft-esc50"]["learnable"] and merges["aec-lmam-ft-esc50"]["source"] == "vit"
    assert merges["aec-ft-esc50"] == {}
    assert "7.75" in " ".join(aec["aec-lmam-ft-esc50"]["_comment"]) and "10.50" in " ".join(aec["aec-mam-4-11-esc50"]["_comment"])


def test_learnable_mam_from_vit_fine_tunes_a_pt(tmp_path, esc50, tiny_dir, cli):
    """L-MAM + FT on BEATs (the recipes' [merge] table): lam learnt per layer, baked into the merged model
    at the end of the cell, which loads as a BEATs model directory."""
    import surgeon
    from surgeon.beats.fixtures import write_beats_checkpoint

    pt = write_beats_checkpoint(tmp_path / "BEATs.pt")
    path = recipe(tmp_path, pt, esc50, method="full")
    path.write_text(path.read_text().replace("epochs = 3", "epochs = 1") + f"""
[merge]
source = "{tiny_dir('vit')}"
learnable = true
init_lam = 0.1
layers = "all"
""")
    r = cli("train", path, "--out", tmp_path / "run")
    assert r.code == 0, r.err
    cell = json.loads((tmp_path / "run" / "results.json").read_text())["cells"][0]
    assert {"lam_layer_0", "lam_layer_1"} <= set(cell["test"])
    merged = surgeon.load(tmp_path / "run" / "checkpoints" / cell["name"] / "merged")
    assert type(merged).__name__ == "BEATsModel" and merged.predictor.out_features == 3
