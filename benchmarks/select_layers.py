"""Speed of `select-layers`: pairs per second and the share of the distance computation, at the
default projection count and at the old default (50) side by side, on tiny models; then the
distance computation alone at the paper's shapes.

    python -m benchmarks.select_layers [--pairs 100] [--layers 4] [--projections P ...] [--batch-size 8]
                                       [--shape-pairs 1179] [--shape-layers 24] [--shape-hidden 1024]

Part 1 builds everything in a temporary directory (tiny BERT with a character tokenizer, tiny HuBERT
with a layer-norm feature encoder like hubert-large and its 20 ms frames, a synthetic paired
manifest) and runs select-layers at each projection count (states at --at attention, all three
metrics computed): forward passes + pooling versus the distances (streaming and the final SWD).
Tiny models make the forward passes cheap, so the distance share there is an upper bound.

Part 2 times the distance computation alone (surgeon.speech.select_layers.Accumulator) on random
pooled states of the paper's shapes: 1179 pairs (10% of LJ Speech's training split), 24 layers of
width 1024, with the memory the point clouds take.
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


def tiny_models(args, counts) -> None:
    from surgeon.speech.select_layers import select_layers

    with tempfile.TemporaryDirectory() as tmp:
        bert, hubert, manifest = build(Path(tmp), args.layers, args.pairs)
        select_layers(bert, hubert, manifest, top_k=1, limit=args.batch_size, split="all")  # warm-up
        rows = []
        for P in counts:
            t0 = time.perf_counter()
            doc = select_layers(bert, hubert, manifest, top_k=1, projections=P, batch_size=args.batch_size,
                                split="all")
            rows.append((P, time.perf_counter() - t0, doc))
    n = rows[0][2]["num_pairs"]
    print(f"part 1: select-layers on tiny models: {n} pairs, {args.layers} layers of width 32, batch "
          f"{args.batch_size}, --at attention, all three metrics computed")
    print(f"{'projections':>12}{'total s':>9}{'pairs/s':>9}{'forward s':>11}{'distance s':>12}"
          f"{'distance share':>16}{'of forward':>12}")
    for P, total, doc in rows:
        fwd, dist = doc["timing"]["forward_s"], doc["timing"]["distance_s"]
        print(f"{P:12d}{total:9.2f}{n / total:9.1f}{fwd:11.2f}{dist:12.3f}{dist / total:16.1%}{dist / fwd:12.1%}")
    base = rows[0]
    for P, total, doc in rows[1:]:
        print(f"{P} vs {base[0]} projections: {total / base[1]:.2f}x the total time, "
              f"{doc['timing']['distance_s'] / base[2]['timing']['distance_s']:.1f}x the distance time")


def paper_shapes(args, counts) -> None:
    import numpy as np
    import torch

    from surgeon.speech.select_layers import Accumulator, random_directions

    n, L, H, B = args.shape_pairs, args.shape_layers, args.shape_hidden, 32
    gen = torch.Generator().manual_seed(0)
    batches = [([torch.randn(min(B, n - i), H, generator=gen) for _ in range(L)],
                [torch.randn(min(B, n - i), H, generator=gen) + 0.1 for _ in range(L)]) for i in range(0, n, B)]
    print(f"part 2: the distance computation alone at the paper's shapes: {n} pairs, {L} layers of width {H}")
    print(f"{'projections':>12}{'streaming s':>13}{'final SWD s':>13}{'total s':>9}{'clouds MB':>11}")
    for P in counts:
        acc = Accumulator(L, random_directions(H, P, 0))
        t0 = time.perf_counter()
        for s, t in batches:
            acc.add(s, t)
        t1 = time.perf_counter()
        acc.scores()
        t2 = time.perf_counter()
        mb = sum(a.nbytes for layer in acc.cloud_s + acc.cloud_t for a in layer) / 2**20
        print(f"{P:12d}{t1 - t0:13.2f}{t2 - t1:13.2f}{t2 - t0:9.2f}{mb:11.0f}")
        del acc
    del np


def main() -> None:
    from surgeon.speech.select_layers import DEFAULT_PROJECTIONS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--projections", type=int, nargs="+", default=[50, DEFAULT_PROJECTIONS])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shape-pairs", type=int, default=1179)
    ap.add_argument("--shape-layers", type=int, default=24)
    ap.add_argument("--shape-hidden", type=int, default=1024)
    ap.add_argument("--skip-shapes", action="store_true", help="Part 1 only.")
    ap.add_argument("--skip-tiny", action="store_true", help="Part 2 only.")
    args = ap.parse_args()

    from surgeon.hf import quiet_transformers

    quiet_transformers()
    counts = sorted(set(args.projections))
    if not args.skip_tiny:
        tiny_models(args, counts)
    if not args.skip_shapes:
        print()
        paper_shapes(args, counts)
    print("note: the machine is shared and noisy; compare the ratios within one run, not the absolute seconds")


if __name__ == "__main__":
    main()
