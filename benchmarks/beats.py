"""The native BEATs model at BEATs_iter3's shape (fine-tuned, 527 classes): what loading costs next to
torch.load alone, and where a forward pass goes (the per-item Kaldi fbank against patches + encoder).

    python -m benchmarks.beats [--batch 4] [--seconds 5] [--repeats 3] [--device cpu]

The checkpoint is a synthetic one in the authors' layout (surgeon.beats.fixtures, random weights, 346 MiB),
built once into benchmarks/.cache/. All figures come from one run, side by side.
"""
from __future__ import annotations

import argparse
import statistics
import time

from benchmarks._common import CACHE


def interleaved(fns: dict, repeats: int) -> dict:
    """Median time of each function, run round-robin (after one warm-up each) so load hits all alike."""
    times: dict = {name: [] for name in fns}
    for rnd in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if rnd:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0, help="clip length (ESC-50: 5 s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    import surgeon
    from surgeon.beats.fixtures import write_beats_checkpoint

    path = CACHE / "beats_iter3_shape_ft527.pt"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        write_beats_checkpoint(path, "base", predictor_class=527)

    t = interleaved({"torch": lambda: torch.load(path, map_location="cpu", weights_only=True),
                     "surgeon": lambda: surgeon.load(path, allow_pickle=True)}, args.repeats)
    t_torch, t_load = t["torch"], t["surgeon"]
    print(f"load {path.name} ({path.stat().st_size / 2**20:.0f} MiB)")
    print(f"  torch.load(weights_only)     {t_torch:7.3f} s   1.00x")
    print(f"  surgeon.load -> BEATsModel   {t_load:7.3f} s   {t_load / t_torch:.2f}x")

    model = surgeon.load(path, allow_pickle=True).to(args.device)
    samples = int(args.seconds * 16000)
    wav = 0.1 * torch.randn(args.batch, samples, generator=torch.Generator().manual_seed(0))
    wav = wav.to(args.device)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        fb = model.fbank(wav)

        def fbank():
            model.fbank(wav)
            sync()

        def rest():
            x = model.embed(fb)
            model._predict(model.encoder(x)[0], None)
            sync()

        def forward():
            model(input_values=wav)
            sync()

        t = interleaved({"fbank": fbank, "rest": rest, "all": forward}, args.repeats)
        t_fbank, t_rest, t_all = t["fbank"], t["rest"], t["all"]
        tokens = model.embed(fb[:1]).shape[1]
    print(f"forward, batch {args.batch} x {args.seconds:g} s ({tokens} tokens each), {args.device}")
    print(f"  whole forward                {t_all:7.3f} s   1.00x   {args.batch / t_all:.1f} clips/s")
    print(f"  fbank (one call per item)    {t_fbank:7.3f} s   {t_fbank / t_all:.2f}x")
    print(f"  patches + encoder + head     {t_rest:7.3f} s   {t_rest / t_all:.2f}x")


if __name__ == "__main__":
    main()
