"""Data loading with [data.mixup]: items per second of the training set without mixup, mixing the
cached features, and mixing the waveforms (AST's way: the fbank of every mixed item is computed
again, the cache cannot serve it), measured side by side in one run with a warm feature cache.

    python -m benchmarks.mixup [--items 240] [--probability 0.6] [--rounds 3]

Synthetic 1 s clips at AST's input (100 fbank frames, 128 mel bins), one process, no workers.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=240)
    ap.add_argument("--probability", type=float, default=0.6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    import torch

    from surgeon.data import AudioDataset, load_index
    from surgeon.data.features import FeatureSpec
    from surgeon.data.mixup import MixupSpec

    torch.set_num_threads(1)
    index = load_index("synthetic", None, num_classes=4, per_class=max(3, args.items // 4), seconds=1.0, seed=0)
    items = [it for it in index.items if it.group == "train"]
    spec = FeatureSpec(max_frames=100)
    with tempfile.TemporaryDirectory() as cache:
        def dataset(mix):
            mixup = MixupSpec(args.probability, 10.0, mix, index.num_classes) if mix else None
            return AudioDataset(items, spec, cache_dir=cache, train=True, seed=0, synthetic=index.synthetic,
                                mixup=mixup)

        configs = {"none": dataset(None), "features": dataset("features"), "waveform": dataset("waveform")}
        warm = configs["none"]  # fill the cache
        for i in range(len(warm)):
            warm[i]
        rates = {name: [] for name in configs}
        for r in range(args.rounds):  # round-robin, so machine load affects all alike
            for name, ds in configs.items():
                ds.set_epoch(r + 1)
                start = time.perf_counter()
                for i in range(len(ds)):
                    ds[i]
                rates[name].append(len(ds) / (time.perf_counter() - start))
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"{len(items)} training items, mixup probability {args.probability}, warm cache, median of {args.rounds}")
    for name, rate in med.items():
        print(f"  {name:<9} {rate:8.0f} items/s   {rate / med['none']:.2f}x of no mixup")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
