"""`surgeon convert imagenet-ast`: an AST initialised from an ImageNet ViT or DeiT, as a model directory."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _state(path):
    from surgeon.hf import load_pretrained

    return load_pretrained(path).state_dict()


@pytest.mark.parametrize("family", ["deit", "vit"])
def test_convert_copies_the_image_model(cli, tiny_dir, tmp_path, family):
    src = tiny_dir(family)
    out = tmp_path / "ast"
    r = cli("convert", "imagenet-ast", src, "--out", out, "--frames", 128, "--stride", 16, "--json")
    assert r.code == 0, r.err
    assert r.json()["tokens"] == 2 + 8 * 8  # [CLS, DIST] + 128 mel bins x 128 frames in 16x16 patches
    ast, img = _state(out), _state(src)
    prefix = "deit." if family == "deit" else "vit."
    a = "audio_spectrogram_transformer."
    assert torch.equal(ast[a + "embeddings.cls_token"], img[prefix + "embeddings.cls_token"])
    dist = img[prefix + "embeddings.distillation_token"] if family == "deit" else img[prefix + "embeddings.cls_token"]
    assert torch.equal(ast[a + "embeddings.distillation_token"], dist)  # a ViT's CLS starts DIST too
    w = img[prefix + "embeddings.patch_embeddings.projection.weight"]
    assert torch.allclose(ast[a + "embeddings.patch_embeddings.projection.weight"], w.sum(dim=1, keepdim=True))
    from surgeon.hf import family_of_model, layer_module_path, load_pretrained

    models = [load_pretrained(p) for p in (out, src)]
    q, q_img = [m.get_submodule(layer_module_path(m, family_of_model(m), 1, "q")).weight for m in models]
    assert torch.equal(q, q_img)
    pos, img_pos = ast[a + "embeddings.position_embeddings"], img[prefix + "embeddings.position_embeddings"]
    assert pos.shape[1] == 66 and torch.equal(pos[:, 0], img_pos[:, 0])  # the CLS position copied, the grid resized


def test_converted_model_takes_inject_and_inspect(cli, tiny_dir, tmp_path):
    out = tmp_path / "ast"
    assert cli("convert", "imagenet-ast", tiny_dir("deit"), "--out", out, "--frames", 64, "--stride", 16).code == 0
    assert cli("inspect", out, "--json").json()["family"] == "ast"
    r = cli("inject", "loaa", "--model", out, "--bottleneck", 4, "--out", tmp_path / "loaa", "--json")
    assert r.code == 0, r.err


def test_convert_bad_input_exits_2(cli, tiny_dir, tmp_path):
    out = tmp_path / "ast"
    r = cli("convert", "imagenet-ast", tiny_dir("deit"), "--out", out, "--frames", 8)
    assert r.code == 2 and "no patch" in r.err and not out.exists()
    assert cli("convert", "imagenet-ast", tiny_dir("deit"), "--out", out).code == 0
    r = cli("convert", "imagenet-ast", tiny_dir("deit"), "--out", out)
    assert r.code == 2 and "--force" in r.err
    r = cli("convert", "imagenet-ast", tiny_dir("bert"), "--out", tmp_path / "x")
    assert r.code == 2 and "ViT or DeiT" in r.err


def test_recipe_vit_ref_may_name_a_deit(tiny_dir):
    from surgeon.recipes.load import load_recipe
    from surgeon.train.model import build_model

    r = load_recipe("loaa-imagenet-ast-attn-t-esc50", [f'model.vit_ref="{tiny_dir("deit")}"', "method.bottleneck=4",
                                                       "data.max_frames=64", f'data.root="{tiny_dir("deit")}"'])
    model, _, _ = build_model(r, ["a", "b"])
    assert type(model).__name__ == "ASTForAudioClassification" and model.config.hidden_size == 32
