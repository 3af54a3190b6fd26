"""select-layers (paper 003 section 4.1) on tiny models: a BERT source with a character tokenizer
built here, HuBERT targets, a synthetic paired manifest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

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
    """select-layers over every pair of the manifest (split "all") unless told otherwise."""
    from surgeon.speech.select_layers import select_layers

    args = dict(metric="swd", top_k=2, projections=20, seed=0, batch_size=4, split="all")
    args.update(kw)
    return select_layers(setup["bert"], setup["hubert"], setup["pairs"], **args)


def pooled_features(ref: str, role: str, pairs: str, at: str = "attention", items=None):
    """All samples' pooled states, computed in one batch (independent of the streaming)."""
    from surgeon.speech.datasets import load_pairs
    from surgeon.speech.select_layers import open_encoder

    items = load_pairs(pairs).items if items is None else items
    layers = open_encoder(ref, role, at).pooled(items)
    return [layer.double().numpy() for layer in layers]


def direct_scores(xs, xt, projections: int, seed: int) -> dict:
    """The three metrics straight from their definitions (POT for the SWD) on full point clouds."""
    import ot

    return {
        "swd": [ot.sliced_wasserstein_distance(a, b, n_projections=projections, seed=seed) for a, b in zip(xs, xt)],
        "euclidean": [np.linalg.norm(a - b, axis=1).mean() for a, b in zip(xs, xt)],
        "inner": [(a * b).sum(1).mean() for a, b in zip(xs, xt)],
    }


def assert_scores(doc, want):
    for metric in ("swd", "euclidean", "inner"):
        assert doc["all_scores"][metric] == pytest.approx(want[metric], rel=1e-5, abs=1e-7), metric


def test_scores_match_direct_pot_and_formulas(setup):
    doc = run(setup, projections=30, seed=3)
    xs = pooled_features(setup["bert"], "source", setup["pairs"])
    xt = pooled_features(setup["hubert"], "target", setup["pairs"])
    assert doc["num_pairs"] == 10 and len(doc["scores"]) == LAYERS
    assert_scores(doc, direct_scores(xs, xt, 30, 3))
    assert doc["scores"] == doc["all_scores"]["swd"]
    assert doc["at"] == "attention"


@pytest.mark.parametrize("projections", [10, "chunks"])
def test_projections_or_vectors_kept_give_pots_swd(setup, projections):
    """Fewer directions than half the hidden size (32): the projections are kept; more: the vectors,
    and the directions are projected in chunks. Either way the SWD equals POT's."""
    from surgeon.speech import select_layers as sl

    projections = sl.DIRECTION_CHUNK + 88 if projections == "chunks" else projections
    doc = run(setup, projections=projections, seed=1)
    xs = pooled_features(setup["bert"], "source", setup["pairs"])
    xt = pooled_features(setup["hubert"], "target", setup["pairs"])
    assert_scores(doc, direct_scores(xs, xt, projections, 1))


# -- which pairs: --split, --fraction, --limit ------------------------------------------------------

def test_split_column_keeps_only_train_rows(setup):
    """The synthetic manifest has a split column (7 train, 1 valid, 2 test of 10): `--split train`
    uses the train rows only, and the scores are those of the train rows alone."""
    import csv

    from surgeon.speech.datasets import load_pairs

    rows = list(csv.DictReader(open(setup["pairs"])))
    train = [r["path"] for r in rows if r["split"] == "train"]
    assert 0 < len(train) < len(rows)
    doc = run(setup, split="train", projections=16, seed=2)
    assert doc["num_pairs"] == len(train)
    assert doc["data"] == {"split": "train", "split_from": "the manifest's split column", "fraction": 1.0,
                           "limit": None, "pairs_listed": len(rows), "pairs_in_split": len(train),
                           "pairs_used": len(train)}
    items = [it for it in load_pairs(setup["pairs"]).items if it.key in train]
    xs = pooled_features(setup["bert"], "source", setup["pairs"], items=items)
    xt = pooled_features(setup["hubert"], "target", setup["pairs"], items=items)
    assert_scores(doc, direct_scores(xs, xt, 16, 2))
    test = run(setup, split="test", projections=16)
    assert test["num_pairs"] == sum(r["split"] == "test" for r in rows)


def test_default_split_is_train(setup):
    from surgeon.speech.select_layers import select_layers

    doc = select_layers(setup["bert"], setup["hubert"], setup["pairs"], top_k=1, projections=4)
    assert doc["data"]["split"] == "train" and doc["num_pairs"] == 7


def test_fraction_is_a_seeded_sample_and_limit_takes_the_first(setup):
    from surgeon.speech.datasets import load_pairs
    from surgeon.speech.select_layers import take_pairs

    items = load_pairs(setup["pairs"]).items
    train = [i for i, it in enumerate(items) if it.group == "train"]
    half = take_pairs(items, split="train", fraction=0.5, limit=None, seed=0)
    assert len(half) == round(0.5 * len(train)) and set(half) <= set(train) and half == sorted(half)
    assert take_pairs(items, split="train", fraction=0.5, limit=None, seed=0) == half  # reproducible
    others = {tuple(take_pairs(items, split="train", fraction=0.5, limit=None, seed=s)) for s in range(1, 6)}
    assert len(others | {tuple(half)}) > 1  # the seed changes the sample
    assert take_pairs(items, split="train", fraction=0.01, limit=None, seed=0) != []  # at least one
    assert take_pairs(items, split="train", fraction=1.0, limit=3, seed=0) == train[:3]
    assert take_pairs(items, split="all", fraction=1.0, limit=None, seed=0) == list(range(len(items)))
    doc = run(setup, split="train", fraction=0.5, limit=2, projections=4)
    assert doc["num_pairs"] == 2 and doc["data"]["pairs_used"] == 2 and doc["data"]["fraction"] == 0.5


def test_manifest_without_split_column_uses_the_hash_split(setup, tmp_path):
    import csv

    from surgeon.speech.datasets import hash_split

    rows = list(csv.DictReader(open(setup["pairs"])))
    base = Path(setup["pairs"]).parent
    bare = tmp_path / "bare.csv"
    with bare.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "text"])
        w.writerows([(str(base / r["path"]), r["text"]) for r in rows])
    from surgeon.speech.select_layers import select_layers

    doc = select_layers(setup["bert"], setup["hubert"], str(bare), top_k=1, projections=4)
    want = sum(hash_split(str(base / r["path"])) == "train" for r in rows)
    assert doc["num_pairs"] == want and "no split column" in doc["data"]["split_from"]
    every = select_layers(setup["bert"], setup["hubert"], str(bare), top_k=1, projections=4, split="all")
    assert every["num_pairs"] == len(rows) and every["data"]["split_from"] == "every pair"


# -- where the hidden states are taken: --at ----------------------------------------------------------

def hooked_states(ref: str, at: str, items) -> list:
    """Pooled per-layer states read with hooks written here, on transformers' own module names, one
    item at a time (no padding): --at layer is each encoder layer's output; --at attention is
    LN(x + Attn(x)) for post-norm layers and x + Attn(LN(x)) for pre-norm ones, rebuilt from the
    layer's input x and the attention module's output."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from surgeon.data.features import feature_spec_for, load_audio, waveform

    model = AutoModel.from_pretrained(ref).eval()
    layers = model.encoder.layer if hasattr(model.encoder, "layer") else model.encoder.layers
    text = model.config.model_type == "bert"
    pre_norm = getattr(model.config, "do_stable_layer_norm", False)
    seen = {}
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(("x", i), args[0])))
        hooks.append(layer.register_forward_hook(
            lambda m, args, out, i=i: seen.__setitem__(("out", i), out[0] if isinstance(out, tuple) else out)))
        hooks.append(layer.attention.register_forward_hook(
            lambda m, args, out, i=i: seen.__setitem__(("attn", i), out[0] if isinstance(out, tuple) else out)))
    tok = AutoTokenizer.from_pretrained(ref) if text else None
    spec = None if text else feature_spec_for(model.config.to_dict(), model.config.model_type)
    per_item = []
    with torch.no_grad():
        for it in items:
            seen.clear()
            if text:
                model(**tok(it.text, return_tensors="pt"))
            else:
                model(waveform(load_audio(it.path, spec.sample_rate), spec)[None])
            states = []
            for i, layer in enumerate(layers):
                if at == "layer":
                    h = seen[("out", i)]
                elif text:  # BertAttention's own output is LN(x + dense(context))
                    h = seen[("attn", i)]
                elif pre_norm:
                    h = seen[("x", i)] + seen[("attn", i)]
                else:
                    h = layer.layer_norm(seen[("x", i)] + seen[("attn", i)])
                states.append(h[0].mean(0).double().numpy())
            per_item.append(states)
    for h in hooks:
        h.remove()
    return [np.stack([states[i] for states in per_item]) for i in range(len(layers))]


@pytest.mark.parametrize("at", ["attention", "layer"])
@pytest.mark.parametrize("target", ["hubert", "hubert2"])  # pre-norm (stable layer norm), post-norm
def test_at_gives_the_scores_of_independently_hooked_states(setup, at, target):
    from surgeon.speech.datasets import load_pairs
    from surgeon.speech.select_layers import select_layers

    doc = select_layers(setup["bert"], setup[target], setup["pairs"], top_k=1, projections=24, seed=5, at=at,
                        split="all", batch_size=4)
    items = load_pairs(setup["pairs"]).items
    xs, xt = hooked_states(setup["bert"], at, items), hooked_states(setup[target], at, items)
    assert_scores(doc, direct_scores(xs, xt, 24, 5))
    assert doc["at"] == at
    where = doc["taken_from"]
    if at == "attention":
        assert where["source"] == "encoder.layer.N.attention.output.LayerNorm (output)"  # BERT: post-norm
        assert where["target"] == ("encoder.layers.N.final_layer_norm (input)" if target == "hubert"
                                   else "encoder.layers.N.layer_norm (output)")


def test_attention_and_layer_states_differ(setup):
    a, b = run(setup, at="attention"), run(setup, at="layer")
    assert all(x != y for x, y in zip(a["all_scores"]["euclidean"], b["all_scores"]["euclidean"]))


def test_swd_noise_shrinks_with_more_directions(setup):
    few, many = run(setup, projections=25, top_k=2), run(setup, projections=400, top_k=2)
    for a, b in zip(few["swd_noise"]["stderr"], many["swd_noise"]["stderr"]):
        assert 0 < b < a
    assert many["swd_noise"]["boundary"] == many["ranking"][1:3]
    assert many["swd_noise"]["boundary_z"] > 0


def test_identical_models_give_zero_distance(setup):
    from surgeon.speech.select_layers import select_layers

    doc = select_layers(setup["hubert"], setup["hubert"], setup["pairs"], metric="euclidean", top_k=1, batch_size=3)
    assert doc["all_scores"]["swd"] == [0.0] * LAYERS
    assert doc["swd_noise"]["stderr"] == [0.0] * LAYERS and doc["swd_noise"]["boundary_z"] is None
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
    import itertools

    import torch
    from transformers import AutoTokenizer, BertModel

    from surgeon.speech.datasets import load_pairs
    from surgeon.speech.select_layers import open_encoder

    items = load_pairs(setup["pairs"]).items[:4]
    assert len({len(it.text) for it in items}) > 1  # texts (and clips) of different lengths
    for (ref, role), at in itertools.product(((setup["bert"], "source"), (setup["hubert"], "target")),
                                             ("attention", "layer")):
        enc = open_encoder(ref, role, at)
        batched = enc.pooled(items)
        alone = [enc.pooled([it]) for it in items]
        for i in range(len(items)):
            for layer in range(LAYERS):
                assert torch.allclose(batched[layer][i], alone[i][layer][0], atol=1e-5), (role, at, i, layer)
    tok, bert = AutoTokenizer.from_pretrained(setup["bert"]), BertModel.from_pretrained(setup["bert"]).eval()
    with torch.no_grad():
        hidden = bert(**tok(items[0].text, return_tensors="pt"), output_hidden_states=True).hidden_states
    pooled = open_encoder(setup["bert"], "source", "layer").pooled(items)
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


def pre_norm_states(encoder, inputs, at: str) -> list:
    """Mean-pooled per-layer states of a pre-norm (ViT / AST) encoder run on `inputs`: the layer
    outputs (--at layer) or x + Attn(LN(x)) rebuilt from each layer's input and its attention
    module's output (--at attention), read with hooks written here."""
    import torch

    seen, hooks = {}, []
    for i, layer in enumerate(encoder.layers):
        hooks.append(layer.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(("x", i), args[0])))
        hooks.append(layer.attention.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(("attn", i), out[0])))
    with torch.no_grad():
        hidden = encoder(inputs, output_hidden_states=True).hidden_states
    for h in hooks:
        h.remove()
    states = hidden[1:] if at == "layer" else [seen[("x", i)] + seen[("attn", i)] for i in range(len(encoder.layers))]
    return [h.mean(1).double().numpy() for h in states]  # every token counts (CLS, patches)


def by_hand_vit(vit: str, images: list, at: str) -> list:
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
    return pre_norm_states(model.vit, torch.stack(pixels), at)


def by_hand_ast(ast: str, clips: list, at: str) -> list:
    """AST features through transformers' own ASTFeatureExtractor (an independent fbank)."""
    import soundfile as sf
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    model = ASTForAudioClassification.from_pretrained(ast).eval()
    fe = ASTFeatureExtractor(num_mel_bins=model.config.num_mel_bins, max_length=model.config.max_length)
    waves = [sf.read(str(p), dtype="float32")[0] for p in clips]
    feats = fe(waves, sampling_rate=16000, return_tensors="pt").input_values
    return pre_norm_states(model.audio_spectrogram_transformer, feats, at)


@pytest.mark.parametrize("at", ["attention", "layer"])
def test_image_source_cli_matches_direct_pot(image_setup, capsys, tmp_path, at):
    import csv

    from surgeon.speech.datasets import load_pairs

    out = tmp_path / "selection.json"
    code, _, err = cli(["select-layers", "--source", image_setup["vit"], "--target", image_setup["ast"],
                        "--pairs", image_setup["pairs"], "--source-pairs", image_setup["images"], "--metric", "swd",
                        "--top-k", "1", "--projections", "16", "--seed", "2", "--batch-size", "4", "--split", "all",
                        "--at", at, "--out", str(out)],
                       capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    images = [Path(image_setup["images"]).parent / row["path"] for row in csv.DictReader(open(image_setup["images"]))]
    xs = by_hand_vit(image_setup["vit"], images, at)
    xt = by_hand_ast(image_setup["ast"], [it.path for it in load_pairs(image_setup["pairs"]).items], at)
    assert doc["num_pairs"] == 10 and len(doc["scores"]) == 2
    assert_scores(doc, direct_scores(xs, xt, 16, 2))
    assert doc["layers"] == [int(np.argmin(doc["scores"]))]
    if at == "attention":  # both pre-norm: the input of the feed-forward's LayerNorm
        assert doc["taken_from"] == {"source": "layers.N.layernorm_after (input)",
                                     "target": "layers.N.layernorm_after (input)"}


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
