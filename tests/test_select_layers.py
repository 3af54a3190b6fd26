"""select-layers (paper 003 section 4.1) on tiny models: a BERT source with a character tokenizer
built here, HuBERT targets, a synthetic paired manifest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

LAYERS = 4
# HuBERT's real frame rate (320 samples = 20 ms per frame) keeps the tiny models fast
FAST = dict(conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 8, 8, 4), num_conv_pos_embeddings=8)


def save_bert_with_tokenizer(out: Path, **overrides) -> Path:
    """A tiny BERT plus a character-level BertTokenizerFast (tiny models have no tokenizer files)."""
    from transformers import BertTokenizerFast

    from surgeon.tiny import save_tiny

    save_tiny("bert", out, **overrides)
    chars = list("abcdefghijklmnopqrstuvwxyz'")
    vocab = out.parent / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from surgeon.speech.datasets import make_synthetic_manifest
    from surgeon.tiny import save_tiny

    root = tmp_path_factory.mktemp("select")
    bert = save_bert_with_tokenizer(root / "bert" / "model", num_hidden_layers=LAYERS)
    # layer-norm feature encoder with an attention mask, like hubert-large: batches are padded
    hub = save_tiny("hubert", root / "hubert", num_hidden_layers=LAYERS, feat_extract_norm="layer",
                    do_stable_layer_norm=True, **FAST)
    # group-norm feature encoder like hubert-base: run one clip at a time
    hub2 = save_tiny("hubert", root / "hubert2", num_hidden_layers=LAYERS, seed=1, **FAST)
    manifest = make_synthetic_manifest(root / "pairs", num=10, seed=0)
    return {"root": root, "bert": str(bert), "hubert": str(hub), "hubert2": str(hub2), "pairs": str(manifest)}


def run(setup, **kw):
    from surgeon.speech.select_layers import select_layers

    args = dict(metric="swd", top_k=2, projections=20, seed=0, batch_size=4)
    args.update(kw)
    return select_layers(setup["bert"], setup["hubert"], setup["pairs"], **args)


def pooled_features(ref: str, role: str, pairs: str):
    """All samples' pooled layer outputs, computed in one batch (independent of the streaming)."""
    import torch

    from surgeon.speech.datasets import load_pairs
    from surgeon.speech.select_layers import open_encoder

    items = load_pairs(pairs).items
    layers = open_encoder(ref, role).pooled(items)
    return [layer.double().numpy() for layer in layers]


def test_scores_match_direct_pot_and_formulas(setup):
    import ot

    doc = run(setup, projections=30, seed=3)
    xs = pooled_features(setup["bert"], "source", setup["pairs"])
    xt = pooled_features(setup["hubert"], "target", setup["pairs"])
    assert doc["num_pairs"] == 10 and len(doc["scores"]) == LAYERS
    for i in range(LAYERS):
        direct = ot.sliced_wasserstein_distance(xs[i], xt[i], n_projections=30, seed=3)
        assert doc["all_scores"]["swd"][i] == pytest.approx(direct, rel=1e-5, abs=1e-9)
        assert doc["all_scores"]["euclidean"][i] == pytest.approx(np.linalg.norm(xs[i] - xt[i], axis=1).mean(), rel=1e-5)
        assert doc["all_scores"]["inner"][i] == pytest.approx((xs[i] * xt[i]).sum(1).mean(), rel=1e-5, abs=1e-7)
    assert doc["scores"] == doc["all_scores"]["swd"]


def test_identical_models_give_zero_distance(setup):
    from surgeon.speech.select_layers import select_layers

    doc = select_layers(setup["hubert"], setup["hubert"], setup["pairs"], metric="euclidean", top_k=1, batch_size=3)
    assert doc["all_scores"]["swd"] == [0.0] * LAYERS
    assert doc["all_scores"]["euclidean"] == [0.0] * LAYERS
    assert all(v > 0 for v in doc["all_scores"]["inner"])


def test_other_speech_model_is_not_at_zero(setup):
    from surgeon.speech.select_layers import select_layers

    doc = select_layers(setup["hubert2"], setup["hubert"], setup["pairs"], top_k=1, projections=10)
    assert all(v > 0 for v in doc["scores"])


@pytest.mark.parametrize("metric", ["swd", "euclidean", "inner"])
def test_ranking_and_top_k_follow_scores(setup, metric):
    doc = run(setup, metric=metric, top_k=3)
    scores = doc["scores"]
    ranked = [scores[i] for i in doc["ranking"]]
    assert ranked == sorted(scores, reverse=(metric == "inner"))
    assert sorted(doc["ranking"]) == list(range(LAYERS))
    assert doc["layers"] == sorted(doc["ranking"][:3])
    assert doc["higher_is_more_similar"] == (metric == "inner")


def test_ranking_helpers_on_fixed_scores():
    from surgeon.speech.select_layers import choose, ranking

    assert ranking([0.3, 0.1, 0.2, 0.1], "swd") == [1, 3, 2, 0]  # ties: lower layer first
    assert ranking([0.3, 0.1, 0.2, 0.1], "inner") == [0, 2, 1, 3]
    assert choose([0.3, 0.1, 0.2, 0.4], "euclidean", 2) == [1, 2]


def test_reproducible_with_seed(setup):
    a, b = run(setup, seed=7), run(setup, seed=7)
    assert a["scores"] == b["scores"]
    c = run(setup, seed=8)
    assert c["scores"] != a["scores"]  # other random directions
    assert c["all_scores"]["euclidean"] == a["all_scores"]["euclidean"]  # no randomness there


def cli(argv, capsys):
    from surgeon_cli.main import run as main

    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_writes_selection_and_plot(setup, capsys, tmp_path):
    out = tmp_path / "sel" / "selection.json"
    argv = ["select-layers", "--source", setup["bert"], "--target", setup["hubert"], "--pairs", setup["pairs"],
            "--metric", "swd", "--top-k", "2", "--projections", "16", "--seed", "1", "--out", str(out)]
    code, stdout, err = cli(argv, capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["metric"] == "swd" and len(doc["layers"]) == 2 and doc["projections"] == 16
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "layers:" in stdout
    # existing output: refused without --force, replaced with it
    code, _, err = cli(argv, capsys)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(argv + ["--force"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("overrides", [{"num_hidden_layers": LAYERS - 1}, {"hidden_size": 48, "num_attention_heads": 2}])
def test_mismatched_models_one_line_exit_2(setup, capsys, tmp_path, overrides):
    other = save_bert_with_tokenizer(tmp_path / "other" / "model", **overrides)
    out = tmp_path / "selection.json"
    code, _, err = cli(["select-layers", "--source", str(other), "--target", setup["hubert"], "--pairs", setup["pairs"],
                        "--out", str(out)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "layers of width" in err
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_bad_options_exit_2(setup, capsys, tmp_path):
    base = ["select-layers", "--source", setup["bert"], "--target", setup["hubert"], "--pairs", setup["pairs"],
            "--out", str(tmp_path / "s.json")]
    for extra, needle in ((["--metric", "cosine"], "--metric"), (["--top-k", "9"], "--top-k")):
        code, _, err = cli(base + extra, capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.json").exists()


def test_text_source_without_tokenizer_is_refused(setup, capsys, tmp_path, tiny_dir):
    bare = tiny_dir("bert", num_hidden_layers=LAYERS)
    code, _, err = cli(["select-layers", "--source", str(bare), "--target", setup["hubert"], "--pairs", setup["pairs"],
                        "--top-k", "2", "--out", str(tmp_path / "s.json")], capsys)
    assert code == 2 and "tokenizer" in err and len(err.strip().splitlines()) == 1


def test_pooling_ignores_padding(setup):
    """Each layer's output averaged over the real positions only: a padded batch gives what each
    sample gives alone, and the text side matches a plain transformers call on the tokenised text."""
    import torch
    from transformers import AutoTokenizer, BertModel

    from surgeon.speech.datasets import load_pairs
    from surgeon.speech.select_layers import open_encoder

    items = load_pairs(setup["pairs"]).items[:4]
    assert len({len(it.text) for it in items}) > 1  # texts (and clips) of different lengths
    for ref, role in ((setup["bert"], "source"), (setup["hubert"], "target")):
        enc = open_encoder(ref, role)
        batched = enc.pooled(items)
        alone = [enc.pooled([it]) for it in items]
        for i in range(len(items)):
            for layer in range(LAYERS):
                assert torch.allclose(batched[layer][i], alone[i][layer][0], atol=1e-5), (role, i, layer)
    tok, bert = AutoTokenizer.from_pretrained(setup["bert"]), BertModel.from_pretrained(setup["bert"]).eval()
    with torch.no_grad():
        hidden = bert(**tok(items[0].text, return_tensors="pt"), output_hidden_states=True).hidden_states
    pooled = open_encoder(setup["bert"], "source").pooled(items)
    for layer in range(LAYERS):
        assert torch.allclose(pooled[layer][0], hidden[layer + 1][0].mean(0), atol=1e-5)


# -- an image source (ViT) with a second manifest of images, an AST target (paper 003, audio events) --

def write_images(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` random RGB images of assorted sizes and their manifest (paths relative to the CSV)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = ["path"]
    for i in range(count):
        h, w = int(rng.integers(20, 48)), int(rng.integers(20, 48))
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / "img" / f"{i}.png")
        rows.append(f"img/{i}.png")
    (folder / "images.csv").write_text("\n".join(rows) + "\n")
    return folder / "images.csv"


@pytest.fixture(scope="module")
def image_setup(setup):
    from surgeon.tiny import save_tiny

    root = setup["root"]
    return {"vit": str(save_tiny("vit", root / "vit")), "ast": str(save_tiny("ast", root / "ast")),
            "images": str(write_images(root / "images", 10)), "pairs": setup["pairs"]}


def by_hand_vit(vit: str, images: list) -> list:
    """ViT features the plain way: resize to image_size, scale to [0, 1], normalise 0.5 / 0.5."""
    import torch
    from PIL import Image
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(vit).eval()
    size = model.config.image_size
    pixels = []
    for path in images:
        x = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255
        pixels.append(torch.from_numpy(((x - 0.5) / 0.5).transpose(2, 0, 1).copy()))
    with torch.no_grad():
        hidden = model.vit(torch.stack(pixels), output_hidden_states=True).hidden_states
    return [h.mean(1).double().numpy() for h in hidden[1:]]  # CLS + patches, every layer


def by_hand_ast(ast: str, clips: list) -> list:
    """AST features through transformers' own ASTFeatureExtractor (an independent fbank)."""
    import soundfile as sf
    import torch
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    model = ASTForAudioClassification.from_pretrained(ast).eval()
    fe = ASTFeatureExtractor(num_mel_bins=model.config.num_mel_bins, max_length=model.config.max_length)
    waves = [sf.read(str(p), dtype="float32")[0] for p in clips]
    feats = fe(waves, sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        hidden = model.audio_spectrogram_transformer(feats, output_hidden_states=True).hidden_states
    return [h.mean(1).double().numpy() for h in hidden[1:]]


def test_image_source_cli_matches_direct_pot(image_setup, capsys, tmp_path):
    import csv

    import ot

    from surgeon.speech.datasets import load_pairs

    out = tmp_path / "selection.json"
    code, _, err = cli(["select-layers", "--source", image_setup["vit"], "--target", image_setup["ast"],
                        "--pairs", image_setup["pairs"], "--source-pairs", image_setup["images"], "--metric", "swd",
                        "--top-k", "1", "--projections", "16", "--seed", "2", "--batch-size", "4", "--out", str(out)],
                       capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    images = [Path(image_setup["images"]).parent / row["path"] for row in csv.DictReader(open(image_setup["images"]))]
    xs = by_hand_vit(image_setup["vit"], images)
    xt = by_hand_ast(image_setup["ast"], [it.path for it in load_pairs(image_setup["pairs"]).items])
    assert doc["num_pairs"] == 10 and len(doc["scores"]) == 2
    for i in range(2):
        direct = ot.sliced_wasserstein_distance(xs[i], xt[i], n_projections=16, seed=2)
        assert doc["scores"][i] == pytest.approx(direct, rel=1e-5, abs=1e-9)
        assert doc["all_scores"]["euclidean"][i] == pytest.approx(np.linalg.norm(xs[i] - xt[i], axis=1).mean(), rel=1e-5)
        assert doc["all_scores"]["inner"][i] == pytest.approx((xs[i] * xt[i]).sum(1).mean(), rel=1e-5, abs=1e-7)
    assert doc["layers"] == [int(np.argmin(doc["scores"]))]


def test_image_preprocessor_config_is_followed(image_setup, tmp_path):
    """With a preprocessor_config.json the checkpoint's own settings apply (as transformers' ViT
    image processor computes them); without one, 0.5 / 0.5 and config.image_size."""
    import shutil

    import torch
    from PIL import Image
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    from surgeon.speech.select_layers import load_image, open_encoder

    vit = tmp_path / "vit"
    shutil.copytree(image_setup["vit"], vit)
    proc = ViTImageProcessorPil(size={"height": 48, "width": 40}, resample=3, image_mean=[0.4, 0.5, 0.6],
                                image_std=[0.2, 0.3, 0.25])
    proc.save_pretrained(vit)
    image = Path(image_setup["images"]).parent / "img" / "3.png"
    enc = open_encoder(str(vit), "source")
    mine = load_image(image, enc.image)
    want = ViTImageProcessorPil.from_pretrained(vit)(Image.open(image), return_tensors="pt")
    assert mine.shape == (3, 48, 40)
    assert torch.allclose(mine, want.pixel_values[0].float(), atol=1e-5)
    plain = load_image(image, open_encoder(image_setup["vit"], "source").image)
    assert plain.shape == (3, 32, 32) and not torch.allclose(plain[:, :32, :32], mine[:, :32, :32])


def test_image_manifest_problems_one_line_exit_2(image_setup, capsys, tmp_path):
    base = ["select-layers", "--source", image_setup["vit"], "--target", image_setup["ast"], "--pairs",
            image_setup["pairs"], "--top-k", "1", "--out", str(tmp_path / "s.json")]
    short = write_images(tmp_path / "short", 7)
    (tmp_path / "nopath.csv").write_text("file\nimg/0.png\n")
    holes = tmp_path / "holes.csv"
    holes.write_text("path\n" + "".join(f"{Path(image_setup['images']).parent}/img/{i}.png\n" for i in range(9)) + "gone.png\n")
    cases = [
        ([], "--source-pairs IMAGES.csv"),                                       # image source, no images
        (["--source-pairs", str(tmp_path / "absent.csv")], "no such file"),
        (["--source-pairs", str(short)], "7 images for 10 audio pairs"),
        (["--source-pairs", str(tmp_path / "nopath.csv")], "no `path` column"),
        (["--source-pairs", str(holes)], "gone.png not found"),
    ]
    for extra, needle in cases:
        code, _, err = cli(base + extra, capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (extra, err)
    # images for a source that does not see them
    code, _, err = cli(["select-layers", "--source", image_setup["ast"], "--target", image_setup["ast"], "--pairs",
                        image_setup["pairs"], "--source-pairs", image_setup["images"], "--top-k", "1",
                        "--out", str(tmp_path / "s.json")], capsys)
    assert code == 2 and "only for an image source" in err and len(err.strip().splitlines()) == 1
    # an image model cannot be the target: it does not hear the audio
    code, _, err = cli(["select-layers", "--source", image_setup["ast"], "--target", image_setup["vit"], "--pairs",
                        image_setup["pairs"], "--top-k", "1", "--out", str(tmp_path / "s.json")], capsys)
    assert code == 2 and "--target" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "s.png").exists()
