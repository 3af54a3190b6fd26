"""How many random directions the sliced Wasserstein distance of `select-layers` needs before its
layer ranking stops depending on the seed (the measurement behind DEFAULT_PROJECTIONS).

    python -m benchmarks.swd_projections [--case tiny|deep|clouds] [--pairs N] [--pool 20000] [--draws 100]

The SWD is a Monte Carlo mean over directions of the squared 1-D Wasserstein distance W(theta); its
relative standard error is about cv / (2 sqrt(P)) for P directions, cv being the coefficient of
variation of W(theta) over directions. For each layer this computes W(theta) once for a pool of
`--pool` directions (uniform on the sphere, as POT draws them), then draws `--draws` pairs of
disjoint sets of P directions from the pool and reports, per P: how often the two seeds agree on
the top-k set (k = 4, 6, 8, 10, the paper's Table 3 values, where the model has that many layers)
and on the whole ranking, how often a seed agrees with the ranking of the whole pool, and the
relative standard error. Cases:

  tiny    tiny random BERT and HuBERT (4 layers, hidden 32), synthetic pairs: what the tests use
  deep    random-initialised BERT-large and HuBERT-large shapes (24 layers of width 1024), synthetic
          pairs, states at --at attention: the real depth and width, untrained weights
  clouds  Gaussian point clouds of the real shape (1179 samples = 10% of LJ Speech's training split,
          24 layers of width 1024), anisotropic (power-law spectrum, two outlier dimensions), whose
          layers differ by a smooth curve with a flat minimum: close calls at the top-k boundary
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

GRID = (25, 50, 100, 200, 500, 1000, 2000, 5000)


def unit_directions(hidden: int, count: int, seed: int) -> np.ndarray:
    d = np.random.default_rng(seed).standard_normal((hidden, count))
    return d / np.linalg.norm(d, axis=0, keepdims=True)


def per_direction(xs: np.ndarray, xt: np.ndarray, pool: int, seed: int, chunk: int = 1000) -> np.ndarray:
    """[layers, pool]: squared 1-D W2 distance of every layer's clouds along each pool direction
    (equal sample counts, uniform weights: the mean squared difference of the sorted projections)."""
    layers, _, hidden = xs.shape
    dirs = unit_directions(hidden, pool, seed).astype(np.float32)
    out = np.empty((layers, pool))
    for i in range(layers):
        a, b = xs[i].astype(np.float32), xt[i].astype(np.float32)
        for start in range(0, pool, chunk):
            d = dirs[:, start:start + chunk]
            pa, pb = np.sort(a @ d, axis=0), np.sort(b @ d, axis=0)
            out[i, start:start + chunk] = ((pa.astype(np.float64) - pb) ** 2).mean(0)
    return out


def ranking(swd: np.ndarray) -> np.ndarray:
    return np.argsort(swd, kind="stable")


def study(values: np.ndarray, draws: int, seed: int, grid=GRID) -> list[dict]:
    layers, pool = values.shape
    ks = [k for k in (4, 6, 8, 10) if k < layers] or [max(1, layers // 2)]
    ref_rank = ranking(np.sqrt(values.mean(1)))
    cv = values.std(1) / values.mean(1)
    rng = np.random.default_rng(seed)
    rows = []
    for P in grid:
        if 2 * P > pool:
            break
        agree = {k: 0 for k in ks}
        agree_ref = {k: 0 for k in ks}
        same_order = 0
        for _ in range(draws):
            pick = rng.permutation(pool)[: 2 * P]
            r1, r2 = (ranking(np.sqrt(values[:, p].mean(1))) for p in (pick[:P], pick[P:]))
            same_order += bool((r1 == r2).all())
            for k in ks:
                agree[k] += set(r1[:k]) == set(r2[:k])
                agree_ref[k] += set(r1[:k]) == set(ref_rank[:k])
        rows.append({"P": P, "two_seeds_same_top_k": {k: agree[k] / draws for k in ks},
                     "same_as_pool_top_k": {k: agree_ref[k] / draws for k in ks},
                     "two_seeds_same_ranking": same_order / draws,
                     "relative_stderr_median": float(np.median(cv) / (2 * np.sqrt(P)))})
    return rows, cv, ref_rank


# -- the cases ------------------------------------------------------------------------------------


def tiny_case(pairs: int):
    from benchmarks.select_layers import build

    tmp = tempfile.mkdtemp()
    bert, hubert, manifest = build(Path(tmp), 4, pairs)
    from surgeon.speech.select_layers import open_encoder

    return features(open_encoder(bert, "source"), open_encoder(hubert, "target"), manifest)


def deep_case(pairs: int):
    """BERT-large and HuBERT-large shapes, random weights, never written to disk."""
    import torch
    import transformers

    from benchmarks.select_layers import build
    from surgeon.anatomy import get_family
    from surgeon.data.features import feature_spec_for
    from surgeon.speech.select_layers import Encoder

    tmp = Path(tempfile.mkdtemp())
    bert_dir, _, manifest = build(tmp, 1, pairs)  # only the tokenizer and the clips are used
    large = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(**large)).eval()
    hubert = transformers.HubertModel(transformers.HubertConfig(
        **large, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(bert_dir)
    src = Encoder("bert-large (random)", bert, get_family("bert"), "text", tokenizer=tok)
    spec = feature_spec_for(hubert.config.to_dict(), "hubert")
    tgt = Encoder("hubert-large (random)", hubert, get_family("hubert"), "speech", spec=spec)
    return features(src, tgt, manifest)


def features(src, tgt, manifest, batch: int = 8):
    import torch

    from surgeon.speech.datasets import load_pairs

    torch.set_num_threads(max(1, torch.get_num_threads()))
    items = load_pairs(manifest).items
    xs, xt = [], []
    for i in range(0, len(items), batch):
        xs.append([h.double().numpy() for h in src.pooled(items[i:i + batch])])
        xt.append([h.double().numpy() for h in tgt.pooled(items[i:i + batch])])
    stack = lambda parts: np.stack([np.concatenate(layer) for layer in zip(*parts)])  # noqa: E731
    return stack(xs), stack(xt)


def clouds_case(pairs: int, layers: int = 24, hidden: int = 1024, seed: int = 0):
    rng = np.random.default_rng(seed)
    spectrum = 1.0 / np.arange(1, hidden + 1)  # power law, as hidden states' principal components
    spectrum[[3, 17]] = 40.0  # two outlier dimensions (BERT-style)
    basis = np.linalg.qr(rng.standard_normal((hidden, hidden)))[0]
    scale = np.sqrt(spectrum)
    # a smooth distance curve over depth with a flat minimum near the middle, small wiggles
    offsets = 0.6 + 0.4 * ((np.arange(layers) - layers / 2) / (layers / 2)) ** 2 + 0.01 * rng.standard_normal(layers)
    direction = basis @ (scale * rng.standard_normal(hidden))
    direction /= np.linalg.norm(direction)
    xs, xt = [], []
    for off in offsets:
        a = (rng.standard_normal((pairs, hidden)) * scale) @ basis.T
        b = (rng.standard_normal((pairs, hidden)) * scale * 1.1) @ basis.T + off * direction
        xs.append(a), xt.append(b)
    return np.stack(xs), np.stack(xt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=("tiny", "deep", "clouds"), default="tiny")
    ap.add_argument("--pairs", type=int, default=None, help="tiny: 100, deep: 64, clouds: 1179")
    ap.add_argument("--pool", type=int, default=20000)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from surgeon.hf import quiet_transformers

    quiet_transformers()
    pairs = args.pairs or {"tiny": 100, "deep": 64, "clouds": 1179}[args.case]
    t0 = time.perf_counter()
    xs, xt = {"tiny": tiny_case, "deep": deep_case, "clouds": clouds_case}[args.case](pairs)
    t1 = time.perf_counter()
    values = per_direction(xs, xt, args.pool, args.seed)
    t2 = time.perf_counter()
    rows, cv, ref = study(values, args.draws, args.seed + 1)
    layers, n, hidden = xs.shape
    print(f"case {args.case}: {n} pairs, {layers} layers of width {hidden}; pool of {args.pool} directions, "
          f"{args.draws} draws per P (features {t1 - t0:.0f} s, W(theta) {t2 - t1:.0f} s)")
    print(f"cv of W(theta) over directions per layer: median {np.median(cv):.2f}, min {cv.min():.2f}, "
          f"max {cv.max():.2f}")
    swd = np.sqrt(values.mean(1))
    gaps = np.diff(np.sort(swd)) / np.sort(swd)[:-1]
    print(f"pool ranking: {' '.join(map(str, ref))}; relative gap between neighbours in it: median "
          f"{np.median(gaps):.2%}, smallest {gaps.min():.2%}")
    ks = list(rows[0]["two_seeds_same_top_k"])
    head = "".join(f"{'k=' + str(k):>8}" for k in ks)
    print(f"{'P':>6} {'rel. s.e.':>9} | two seeds, same top-k:{head} | same order | vs pool, same top-k:{head}")
    for r in rows:
        a = "".join(f"{r['two_seeds_same_top_k'][k]:8.0%}" for k in ks)
        b = "".join(f"{r['same_as_pool_top_k'][k]:8.0%}" for k in ks)
        print(f"{r['P']:6d} {r['relative_stderr_median']:9.2%} | {'':22}{a} | {r['two_seeds_same_ranking']:10.0%} | "
              f"{'':20}{b}")


if __name__ == "__main__":
    main()
