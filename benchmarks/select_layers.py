"""Time of `select-layers` per 100 paired samples on tiny models, and where it goes: the forward passes
of both models versus the distance computation (pooling excluded: it is part of the forward side).

    python -m benchmarks.select_layers [--pairs 100] [--layers 4] [--projections 50] [--batch-size 8]

Everything is built in a temporary directory (tiny BERT with a character tokenizer, tiny HuBERT with
a layer-norm feature encoder like hubert-large and its 20 ms frames, a synthetic paired manifest); the three metrics are
computed in the same run, so the figures are side by side. Also shown: the direct POT call on the
full pooled features (what the streaming computation replaces) for the same layers.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def build(root: Path, layers: int, pairs: int):
    from transformers import BertTokenizerFast

    from surgeon.speech.datasets import make_synthetic_manifest
    from surgeon.tiny import save_tiny

    bert = save_tiny("bert", root / "bert", num_hidden_layers=layers)
    chars = list("abcdefghijklmnopqrstuvwxyz'")
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars,
                                               *("##" + c for c in chars)]) + "\n")
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(bert)
    # HuBERT's real frame rate: 320 samples (20 ms) per frame
    hubert = save_tiny("hubert", root / "hubert", num_hidden_layers=layers, feat_extract_norm="layer",
                       do_stable_layer_norm=True, conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4),
                       conv_kernel=(10, 8, 8, 4), num_conv_pos_embeddings=8)
    manifest = make_synthetic_manifest(root / "pairs", num=pairs, seed=0)
    return str(bert), str(hubert), str(manifest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--projections", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    import numpy as np
    import ot

    from surgeon.hf import quiet_transformers
    from surgeon.speech.datasets import load_pairs
    from surgeon.speech.select_layers import open_encoder, select_layers

    quiet_transformers()
    with tempfile.TemporaryDirectory() as tmp:
        bert, hubert, manifest = build(Path(tmp), args.layers, args.pairs)
        select_layers(bert, hubert, manifest, top_k=1, limit=args.batch_size)  # warm-up (imports, caches)
        t0 = time.perf_counter()
        doc = select_layers(bert, hubert, manifest, metric="swd", top_k=1, projections=args.projections,
                            batch_size=args.batch_size)
        total = time.perf_counter() - t0
        # the non-streaming way for comparison: keep every pooled vector, call POT on them
        items = load_pairs(manifest).items
        src, tgt = open_encoder(bert, "source"), open_encoder(hubert, "target")
        xs = [np.concatenate(z) for z in zip(*[[x.double().numpy() for x in src.pooled(items[i:i + args.batch_size])]
                                               for i in range(0, len(items), args.batch_size)])]
        xt = [np.concatenate(z) for z in zip(*[[x.double().numpy() for x in tgt.pooled(items[i:i + args.batch_size])]
                                               for i in range(0, len(items), args.batch_size)])]
        t1 = time.perf_counter()
        for a, b in zip(xs, xt):
            ot.sliced_wasserstein_distance(a, b, n_projections=args.projections, seed=0)
        direct = time.perf_counter() - t1

    n = doc["num_pairs"]
    fwd, dist = doc["timing"]["forward_s"], doc["timing"]["distance_s"]
    per100 = total * 100 / n
    print(f"select-layers on tiny models: {n} pairs, {args.layers} layers, hidden 32, batch {args.batch_size}, "
          f"{args.projections} projections (all three metrics computed)")
    print(f"{'':34}{'seconds':>10}{'per 100 pairs':>16}{'share':>9}")
    print(f"{'total (load models + run)':34}{total:10.3f}{per100:16.3f}{1:9.1%}")
    print(f"{'forward passes + pooling':34}{fwd:10.3f}{fwd * 100 / n:16.3f}{fwd / total:9.1%}")
    print(f"{'distances (streamed projections)':34}{dist:10.3f}{dist * 100 / n:16.3f}{dist / total:9.1%}")
    print(f"{'rest (loading models, reading)':34}{total - fwd - dist:10.3f}{(total - fwd - dist) * 100 / n:16.3f}"
          f"{(total - fwd - dist) / total:9.1%}")
    print(f"distance / forward: {dist / fwd:.4f}; direct POT on full features (SWD only): {direct:.4f} s "
          f"vs streamed (all metrics): {dist:.4f} s")
    print("note: the machine is shared and noisy; compare the ratios, not the absolute seconds")


if __name__ == "__main__":
    main()
