"""select-layers with an authors' BEATs .pt as the target and an image source (ViT), paired images as
for AST (paper 003, audio events): BEATs hears the raw waveform, its states are pooled over the kept
tokens, and the scores are those of POT on states computed here with hooks of our own."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from test_select_layers import assert_scores, by_hand_vit, cli, direct_scores, write_images  # noqa: F401


@pytest.fixture(scope="module")
def beats_setup(tmp_path_factory):
    from surgeon.beats.fixtures import write_beats_checkpoint
    from surgeon.speech.datasets import make_synthetic_manifest
    from surgeon.tiny import save_tiny

    root = tmp_path_factory.mktemp("beats_select")
    return {"vit": str(save_tiny("vit", root / "vit")),  # 2 layers of width 32, as the small BEATs
            "beats": str(write_beats_checkpoint(root / "BEATs_small.pt", "small")),
            "pairs": str(make_synthetic_manifest(root / "pairs", num=10, seed=0)),
            "images": str(write_images(root / "images", 10))}


def by_hand_beats(beats: str, clips: list, at: str) -> list:
    """BEATs' per-layer states, one clip at a time (no padding), mean over its tokens: each layer's
    output (--at layer) or, post-LN, the attention's LayerNorm output (--at attention)."""
    import soundfile as sf
    import torch

    from surgeon.beats.checkpoint import load_pt

    model = load_pt(beats, allow_pickle=True).eval()
    rows = []
    for clip in clips:
        wav = torch.from_numpy(sf.read(str(clip), dtype="float32")[0])[None]
        seen, hooks = {}, []
        for i, layer in enumerate(model.encoder.layers):
            hooks.append(layer.self_attn_layer_norm.register_forward_hook(
                lambda m, a, out, i=i: seen.__setitem__(i, out)))
        with torch.no_grad():
            out = model(input_values=wav, output_hidden_states=True)
        for h in hooks:
            h.remove()
        states = out.hidden_states[1:] if at == "layer" else [seen[i] for i in range(len(model.encoder.layers))]
        rows.append([s.mean(1)[0].double().numpy() for s in states])
    return [np.stack(layer) for layer in zip(*rows)]


@pytest.mark.parametrize("at", ["attention", "layer"])
def test_vit_to_beats_pt_matches_direct_pot(beats_setup, capsys, tmp_path, at):
    from surgeon.speech.datasets import load_pairs

    out = tmp_path / "selection.json"
    code, _, err = cli(["select-layers", "--source", beats_setup["vit"], "--target", beats_setup["beats"],
                        "--allow-pickle", "--pairs", beats_setup["pairs"], "--source-pairs", beats_setup["images"],
                        "--top-k", "1", "--projections", "16", "--seed", "2", "--batch-size", "4", "--split", "all",
                        "--at", at, "--out", str(out)], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    images = [Path(beats_setup["images"]).parent / r["path"] for r in csv.DictReader(open(beats_setup["images"]))]
    xs = by_hand_vit(beats_setup["vit"], images, at)
    # batches of clips of different lengths are padded: the kept tokens must give the unpadded states
    xt = by_hand_beats(beats_setup["beats"], [it.path for it in load_pairs(beats_setup["pairs"]).items], at)
    assert doc["num_pairs"] == 10 and len(doc["scores"]) == 2
    assert_scores(doc, direct_scores(xs, xt, 16, 2))
    if at == "attention":  # ViT pre-norm, BEATs post-LN
        assert doc["taken_from"] == {"source": "layers.N.layernorm_after (input)",
                                     "target": "encoder.layers.N.self_attn_layer_norm (output)"}


def test_beats_pt_without_allow_pickle_is_refused(beats_setup, capsys, tmp_path):
    code, _, err = cli(["select-layers", "--source", beats_setup["vit"], "--target", beats_setup["beats"],
                        "--pairs", beats_setup["pairs"], "--source-pairs", beats_setup["images"], "--top-k", "1",
                        "--out", str(tmp_path / "s.json")], capsys)
    assert code == 2 and "pickle" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s.json").exists()
