"""Train-step time of Soft-MoA and Dense-MoA against a single bottleneck adapter (paper 000, Table 1).

AST-base (ASTConfig() defaults, random weights), 1-second inputs (max_length 100 frames -> 110 tokens),
batch 4, on CPU. Configurations, each Pfeiffer on the FFN, in parallel (the adapter reads the FFN's
input, i.e. layernorm_after's output, and its output is added to the FFN's output), in all 12 layers:
  single     Bottleneck, b = 24
  dense-moa  Dense-MoA, 14 bottleneck experts, b = 1
  soft-moa   Soft-MoA, 14 bottleneck experts, b = 1, 1 slot
One step = forward + cross-entropy + backward + AdamW step; the backbone is frozen and only the adapters
train. All configurations share one backbone (adapters attached by forward hooks, swapped between
steps) and are measured side by side: the repetitions are interleaved, the order rotates each round,
and the figures are medians after warm-up (wall time, and the process's CPU time). Paper: Soft-MoA 1.22x, Dense-MoA 3.29x a single adapter.

A second table times the adapter modules alone (12 of them, forward + backward on [4, 110, 768]):
the part of the step that the mixtures change, without the backbone's cost around it. A third times
them on a padded batch (items 2 and 4 padded to 60% of the tokens, the frame mask current, as on the
speech backbones: surgeon/methods/padding.py) beside the same modules unmasked.

    python -m benchmarks.moa_step [--threads 2] [--repeats 7] [--warmup 2]   (from the repository root)
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from surgeon.modules import Bottleneck, DenseMoA, SoftMoA

BATCH, FRAMES = 4, 100
CONFIGS = {
    "single": lambda d: Bottleneck(d, 24),
    "dense-moa": lambda d: DenseMoA(d, num_experts=14, bottleneck=1),
    "soft-moa": lambda d: SoftMoA(d, num_experts=14, bottleneck=1, slots=1),
}


def build_backbone():
    from transformers import ASTConfig, ASTForAudioClassification

    from surgeon.hf import quiet_transformers

    quiet_transformers()
    torch.manual_seed(0)
    model = ASTForAudioClassification(ASTConfig(max_length=FRAMES, num_labels=35))
    model.requires_grad_(False)
    return model.train()


class Placement:
    """One adapter per layer, parallel to the FFN: mlp(x) + adapter(x), by forward hooks."""

    def __init__(self, model, make):
        self.layers = model.audio_spectrogram_transformer.layers
        self.adapters = torch.nn.ModuleList(make(model.config.hidden_size) for _ in self.layers)
        self.handles = []

    def __enter__(self):
        for layer, adapter in zip(self.layers, self.adapters):
            hook = lambda module, args, output, adapter=adapter: output + adapter(args[0])  # noqa: E731
            self.handles.append(layer.mlp.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def make_step(model, placement, inputs, labels):
    optimizer = torch.optim.AdamW(placement.adapters.parameters(), lr=5e-3, betas=(0.9, 0.98), eps=1e-6,
                                  weight_decay=0.1)

    def step():
        with placement:
            optimizer.zero_grad(set_to_none=True)
            logits = model(input_values=inputs).logits
            torch.nn.functional.cross_entropy(logits, labels).backward()
            optimizer.step()
    return step


def make_module_step(adapters, x, mask=None):
    from surgeon.modules.padding import set_mask

    def step():
        grad = torch.ones_like(x)
        set_mask(mask)
        try:
            for adapter in adapters:
                adapter(x).backward(grad)
        finally:
            set_mask(None)
    return step


def side_by_side(steps: dict, repeats: int, warmup: int) -> dict:
    """{name: [(wall s, process CPU s), ...]}, the configurations interleaved round by round (rotating order).

    CPU time (all threads of this process) is reported beside wall time: on a shared machine it is
    less sensitive to the time the process spends waiting for a core."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            steps[name]()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def report(title, times):
    """Medians, and the median over rounds of each round's ratio to the single adapter (a round measures
    the configurations back to back, so a slow drift in the machine's load cancels in its ratios)."""
    single = times["single"]
    print(f"\n{title}")
    print(f"{'config':<10} {'wall ms':>9} {'min ms':>9} {'cpu ms':>9} {'x single (wall, cpu, per-round wall)':>38}")
    for name, values in times.items():
        wall, cpu = (statistics.median(v[i] for v in values) for i in (0, 1))
        ratio_wall = wall / statistics.median(v[0] for v in single)
        ratio_cpu = cpu / statistics.median(v[1] for v in single)
        per_round = statistics.median(v[0] / s[0] for v, s in zip(values, single))
        print(f"{name:<10} {wall * 1e3:>9.1f} {min(v[0] for v in values) * 1e3:>9.1f} {cpu * 1e3:>9.1f} "
              f"{ratio_wall:>16.3f} {ratio_cpu:>6.3f} {per_round:>14.3f}")
    print("(wall, cpu: medians over the repeats; min: fastest wall time)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = build_backbone()
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(BATCH, FRAMES, model.config.num_mel_bins, generator=gen)
    labels = torch.randint(0, model.config.num_labels, (BATCH,), generator=gen)
    placements = {name: Placement(model, make) for name, make in CONFIGS.items()}
    with torch.no_grad():
        tokens = model.audio_spectrogram_transformer.embeddings(inputs).shape[1]

    print(f"AST-base ({model.config.num_hidden_layers} layers, d = {model.config.hidden_size}), batch {BATCH}, "
          f"{FRAMES} frames = {tokens} tokens, torch {torch.__version__}, {args.threads} threads, "
          f"{args.repeats} repeats after {args.warmup} warm-up")
    for name, placement in placements.items():
        count = sum(p.numel() for p in placement.adapters.parameters())
        print(f"  {name:<10} adapter parameters {count:>9,} (+ 18,432 unfrozen LayerNorm in the papers' count)")

    steps = {name: make_step(model, placement, inputs, labels) for name, placement in placements.items()}
    report("train step: forward + backward + AdamW (backbone frozen)", side_by_side(steps, args.repeats, args.warmup))

    x = torch.randn(BATCH, tokens, model.config.hidden_size, generator=gen)
    module_steps = {name: make_module_step(placement.adapters, x) for name, placement in placements.items()}
    report("adapters alone: 12 modules, forward + backward",
           side_by_side(module_steps, 5 * args.repeats, args.warmup))
    mask = torch.ones(BATCH, tokens, dtype=torch.bool)
    mask[1::2, int(0.6 * tokens):] = False
    padded_steps = {"single": module_steps["single"]}
    for name in ("dense-moa", "soft-moa"):
        padded_steps[name] = module_steps[name]
        padded_steps[f"{name}+mask"] = make_module_step(placements[name].adapters, x, mask)
    report("adapters alone on a padded batch: unmasked vs with the frame mask",
           side_by_side(padded_steps, 5 * args.repeats, args.warmup))
    print("\npaper 000 Table 1 (GPU): soft-moa 1.22x, dense-moa 3.29x; goals: soft-moa <= 1.10x, dense-moa <= 1.30x")


if __name__ == "__main__":
    main()
