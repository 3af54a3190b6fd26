"""Training step cost: full fine-tuning vs a Pfeiffer bottleneck adapter on the AST-base shape.

    python -m benchmarks.train_step [--steps 6] [--batch 4]

AST-base dimensions (d 768, 12 layers, 12 heads, FFN 3072) with random weights (no download), 1 s clips
(100 fbank frames), batch 4, on the CPU, AdamW as in training. Each configuration runs in its own
process so peak memory is its own: "peak" is the growth of the process's peak resident set over what
it held after imports (weights + gradients + optimiser state + activations). Data loading is timed
with a warm feature cache (the first pass fills it): the share of each step spent waiting for the
DataLoader. Goals (issue 5): adapter peak <= 0.6x full fine-tuning; data loading < 10% of a step.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


AST_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                max_length=100, num_mel_bins=128)
CONFIGS = {
    "full": ("full", {}),
    "adapter": ("bottleneck", {"placement": "pfeiffer", "insertion": "parallel", "reduction": 64}),
}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def child(name: str, steps: int, batch: int, cache: str) -> dict:
    import torch

    import surgeon.api as api
    from surgeon.data import AudioDataset, feature_spec_for, load_index
    from surgeon.tiny import build_tiny
    from surgeon.train.dist import Runtime
    from surgeon.train.loop import make_loader, to_device
    from surgeon.train.optim import build_optimizer
    from surgeon.train.tasks import get_task

    torch.manual_seed(0)
    task = get_task("classification")
    index = load_index("synthetic", None, num_classes=5, per_class=(steps + 2) * batch, seconds=1.0)
    spec = feature_spec_for({"max_length": 100}, "ast")
    dataset = AudioDataset(index.items, spec, cache_dir=cache, train=True, synthetic=index.synthetic)
    for i in range(len(dataset)):  # warm the feature cache (not timed)
        dataset[i]
    base = peak_mb()
    model = build_tiny("ast", **AST_BASE, num_labels=5)
    task.prepare(model, index.classes)
    method, options = CONFIGS[name]
    api.inject(model, method, **options)
    groups = api.parameter_groups(model)
    optimizer = build_optimizer(groups, {g: 1e-4 for g in groups})
    runtime = Runtime(torch.device("cpu"), "fp32")
    loader = make_loader(dataset, batch, shuffle=True, seed=0, workers=0, runtime=runtime)
    model.train()
    data_s, step_s, done = 0.0, 0.0, 0
    it = iter(loader)
    for i in range(steps + 1):
        t0 = time.perf_counter()
        b = to_device(next(it), runtime.device)
        t1 = time.perf_counter()
        loss = task.loss(task.forward(model, b), b)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if i > 0:  # the first step allocates optimiser state; not timed
            data_s += t1 - t0
            step_s += t2 - t0
            done += 1
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"config": name, "trainable": trainable, "samples_per_s": done * batch / step_s,
            "step_s": step_s / done, "data_share": data_s / step_s, "peak_mb": peak_mb() - base,
            "threads": torch.get_num_threads()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--child", choices=list(CONFIGS))
    p.add_argument("--cache")
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.steps, a.batch, a.cache)))
        return 0
    with tempfile.TemporaryDirectory() as cache:
        rows = []
        for name in CONFIGS:
            out = subprocess.run([sys.executable, "-m", "benchmarks.train_step", "--child", name, "--steps", str(a.steps),
                                  "--batch", str(a.batch), "--cache", cache],
                                 capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return out.returncode
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    full, adapter = rows
    print(f"AST-base shape, CPU ({full['threads']} threads), batch {a.batch}, 1 s clips (100 frames), "
          f"{a.steps} timed steps each")
    print(f"{'':22}{'full FT':>14}{'Pfeiffer adapter':>18}{'adapter/full':>14}")
    print(f"{'trainable parameters':22}{full['trainable']:>14,}{adapter['trainable']:>18,}"
          f"{adapter['trainable'] / full['trainable']:>14.4f}")
    print(f"{'samples / s':22}{full['samples_per_s']:>14.2f}{adapter['samples_per_s']:>18.2f}"
          f"{adapter['samples_per_s'] / full['samples_per_s']:>14.2f}")
    print(f"{'step time (s)':22}{full['step_s']:>14.3f}{adapter['step_s']:>18.3f}"
          f"{adapter['step_s'] / full['step_s']:>14.2f}")
    print(f"{'peak memory (MB)':22}{full['peak_mb']:>14.0f}{adapter['peak_mb']:>18.0f}"
          f"{adapter['peak_mb'] / full['peak_mb']:>14.2f}   goal <= 0.60")
    print(f"{'data loading share':22}{full['data_share']:>14.1%}{adapter['data_share']:>18.1%}"
          f"{'':>14}   goal < 10% (warm cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
