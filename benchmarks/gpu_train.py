"""Training throughput and peak memory: AST-base with a Pfeiffer bottleneck adapter, Soft-MoA (14 experts),
LoRA and full fine-tuning, in fp32 (and fp32 with TF32 matmuls on a GPU) and bf16 autocast.

    python -m benchmarks.gpu_train                                  # on a GPU: batch 32, 500 frames
    python -m benchmarks.gpu_train --compile --json gpu_train.json  # + torch.compile, figures as JSON
    python -m benchmarks.gpu_train --device cpu                     # CPU default: 2 layers, batch 2, 50 frames
    python -m benchmarks.gpu_train --methods lora,full --precisions fp32,bf16 --steps 20 --warmup 5
    python -m benchmarks.gpu_train --device cpu --rounds 3 --threads 1  # steadier on a shared CPU

Model: the AST-base shape (d 768, 12 layers, 12 heads, FFN 3072, 128 mel bins, 50 labels: ESC-50) with
random weights (no download), PyTorch SDPA attention (the attention implementation transformers really
uses is reported). Input: random fbank-like features already on the device ([batch, frames, 128]); on a
GPU the default is the papers' ESC-50 shape (batch 32, 500 frames = 590 tokens), on the CPU a smaller one
(2 of the 12 layers, batch 2, 50 frames = 50 tokens) so that the whole run takes about 3 minutes on
two cores: without native bf16 instructions (AVX-512 BF16 / AMX) bf16 autocast is far slower than fp32.

Methods go through the library (`surgeon.api.inject`, `parameter_groups`, `build_optimizer`) with the
papers' defaults: bottleneck b = 12 (RR 64) Pfeiffer on MHSA, parallel; Soft-MoA 14 experts of b = 1,
1 slot; LoRA r = 6 on W_q, W_v; full fine-tuning. One step = forward + cross-entropy + backward + AdamW
step; warm-up steps first (the first allocates the optimiser state, a compiled model compiles), then the
timed steps, each between `torch.cuda.synchronize()` calls; throughput = batch / median step time.
Precisions: fp32 (TF32 off), tf32 (fp32 with TF32 matmuls, CUDA only), bf16 autocast, fp16 autocast with
a gradient scaler (CUDA only); autocast rows run with TF32 on, as training does by default.

Each configuration runs in its own process so its peak memory is its own: on a GPU the peak of
`torch.cuda.max_memory_allocated()` (weights + gradients + optimiser state + activations), on the CPU
the growth of the process's peak resident set over what it held after imports (coarse: the allocator
keeps what it frees). Printed side by side: each method against full fine-tuning (throughput and
memory), and each precision against fp32; beside the wall-clock throughput, "cpu ms" is the process's
CPU time per step (on a shared machine the wall clock also counts the time spent waiting for a core).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from surgeon.onednn import cap_amx

cap_amx()  # bf16 on AMX CPUs: oneDNN's AMX matmul leaks NaN (surgeon/onednn.py); before any kernel runs

AST_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                num_mel_bins=128)
NUM_LABELS = 50  # ESC-50
# name -> (library method, options: the papers' defaults, spelled out), learning rate (petl-facts.md)
METHODS = {
    "bottleneck": ("bottleneck", {"placement": "pfeiffer", "location": "mhsa", "insertion": "parallel",
                                  "reduction": 64.0}, 5e-3),
    "soft-moa": ("soft-moa", {"num_experts": 14, "bottleneck": 1, "slots": 1}, 5e-3),
    "lora": ("lora", {"rank": 6, "targets": ["q", "v"]}, 5e-3),
    "full": ("full", {}, 5e-5),
}
# precision -> (autocast dtype name or None, TF32 matmuls, needs CUDA)
PRECISIONS = {
    "fp32": (None, False, False),
    "tf32": (None, True, True),
    "bf16": ("bfloat16", True, False),
    "fp16": ("float16", True, True),
}
DEFAULTS = {  # device type -> shape, steps and precisions (the CPU's: a whole run in about 3 minutes on 2 cores)
    "cuda": dict(batch=32, frames=500, layers=12, steps=20, warmup=5, precisions="fp32,tf32,bf16"),
    "cpu": dict(batch=2, frames=50, layers=2, steps=4, warmup=1, precisions="fp32,bf16"),
}


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def build_model(frames: int, shape: dict):
    """AST of `shape` (AST-base by default) for `frames`-frame inputs, SDPA attention, random weights."""
    from transformers import ASTConfig, ASTForAudioClassification

    from surgeon.hf import quiet_transformers

    quiet_transformers()
    config = ASTConfig(**{**AST_BASE, **shape}, max_length=frames, num_labels=NUM_LABELS,
                       attn_implementation="sdpa")
    return ASTForAudioClassification(config)


def set_tf32(on: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    torch.set_float32_matmul_precision("high" if on else "highest")


def measure(method: str, precision: str, *, device: str = "cpu", batch: int, frames: int, steps: int,
            warmup: int = 1, compile: bool = False, shape: dict | None = None, seed: int = 0) -> dict:
    """One configuration's training step, measured in this process: a dict of figures (one table row)."""
    import torch
    import transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer  # noqa: F401

    import surgeon.api as api
    from surgeon.methods import get_method
    from surgeon.train.optim import build_optimizer

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    autocast_dtype, tf32, needs_cuda = PRECISIONS[precision]
    if needs_cuda and not cuda:
        raise ValueError(f"precision {precision} needs a CUDA device")
    if cuda:
        set_tf32(tf32)
    library_method, options, lr = METHODS[method]
    get_method(library_method)  # imports the method's module: the RSS baseline holds every library
    baseline = peak_rss_bytes()
    torch.manual_seed(seed)
    model = build_model(frames, shape or {})
    api.inject(model, library_method, **options)
    model.to(dev).train()
    groups = api.parameter_groups(model)
    optimizer = build_optimizer(groups, {g: lr for g in groups})
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    attention = model.config._attn_implementation
    forward = torch.compile(model) if compile else model

    gen = torch.Generator().manual_seed(seed)
    # normalised Kaldi fbank features have roughly zero mean and a standard deviation of about 0.5
    inputs = (0.5 * torch.randn(batch, frames, model.config.num_mel_bins, generator=gen)).to(dev)
    labels = torch.randint(0, NUM_LABELS, (batch,), generator=gen).to(dev)
    def autocast():
        if autocast_dtype is None:
            return torch.autocast(dev.type, enabled=False)
        return torch.autocast(dev.type, dtype=getattr(torch, autocast_dtype))

    def step():
        with autocast():
            logits = forward(input_values=inputs).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    first_loss = None
    for _ in range(warmup):
        loss = step()
        first_loss = float(loss) if first_loss is None else first_loss
    sync()
    warmup_s = time.perf_counter() - t0
    walls, cpus, losses = [], [], []
    for _ in range(steps):
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        losses.append(step())
        sync()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    step_s = statistics.median(walls)
    if cuda:
        peak = torch.cuda.max_memory_allocated(dev)
        reserved = torch.cuda.max_memory_reserved(dev)
    else:
        peak, reserved = peak_rss_bytes() - baseline, None
    with torch.no_grad():
        tokens = model.audio_spectrogram_transformer.embeddings(inputs[:1]).shape[1]
    return {
        "method": method, "precision": precision, "compile": compile, "tf32": tf32 and cuda,
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu", "threads": torch.get_num_threads(),
        "batch": batch, "frames": frames, "tokens": tokens, "layers": model.config.num_hidden_layers,
        "hidden": model.config.hidden_size, "attention": attention,
        "trainable": trainable, "parameters": total,
        "samples_per_s": batch / step_s, "step_s": step_s, "step_min_s": min(walls),
        "cpu_s": statistics.median(cpus), "warmup_s": warmup_s,
        "peak_bytes": peak, "peak_reserved_bytes": reserved, "peak_kind": "cuda allocated" if cuda else "rss growth",
        "loss": float(torch.stack(losses).float().mean()), "first_loss": first_loss, "steps": steps, "warmup": warmup,
        "torch": torch.__version__,
    }


def run_child(args, method: str, precision: str, compile: bool) -> dict:
    """measure() in a fresh process, so the peak memory is this configuration's own."""
    cmd = [sys.executable, "-m", "benchmarks.gpu_train", "--child", method, precision, str(int(compile)),
           "--device", args.device, "--batch", str(args.batch), "--frames", str(args.frames),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--layers", str(args.layers)]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{method} {precision}: the measuring process failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput (the lower middle one of an even number)."""
    return sorted(runs, key=lambda r: r["samples_per_s"])[(len(runs) - 1) // 2]


def ratio(row: dict, other: dict | None, key: str) -> str:
    return f"{row[key] / other[key]:>10.2f}" if other and other[key] else f"{'-':>10}"


def table(rows: list[dict]) -> str:
    """One line per method and precision, with the ratios against full fine-tuning and against fp32."""
    eager = {(r["method"], r["precision"]): r for r in rows if not r["compile"]}
    compiled = {(r["method"], r["precision"]): r for r in rows if r["compile"]}
    gib = 1024 ** 3
    head = (f"{'method':<11}{'precision':<10}{'trainable':>12}{'samples/s':>11}{'cpu ms':>9}{'peak GiB':>10}"
            f"{'thr/full':>10}{'mem/full':>10}{'thr/fp32':>10}{'mem/fp32':>10}")
    if compiled:
        head += f"{'compiled/s':>12}{'compile x':>11}{'c.peak GiB':>12}"
    lines = [head]
    for (method, precision), r in eager.items():
        full, fp32 = eager.get(("full", precision)), eager.get((method, "fp32"))
        line = (f"{method:<11}{precision:<10}{r['trainable']:>12,}{r['samples_per_s']:>11.2f}"
                f"{r['cpu_s'] * 1e3:>9.0f}{r['peak_bytes'] / gib:>10.3f}"
                f"{ratio(r, full, 'samples_per_s')}{ratio(r, full, 'peak_bytes')}"
                f"{ratio(r, fp32, 'samples_per_s')}{ratio(r, fp32, 'peak_bytes')}")
        c = compiled.get((method, precision))
        if c:
            line += (f"{c['samples_per_s']:>12.2f}{c['samples_per_s'] / r['samples_per_s']:>11.2f}"
                     f"{c['peak_bytes'] / gib:>12.3f}")
        lines.append(line)
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one), cuda, cpu")
    p.add_argument("--batch", type=int, help="default 32 on a GPU, 2 on the CPU")
    p.add_argument("--frames", type=int, help="input frames (max_length); default 500 on a GPU, 50 on the CPU")
    p.add_argument("--layers", type=int, help="transformer layers; default 12 (AST-base) on a GPU, 2 on the CPU")
    p.add_argument("--steps", type=int, help="timed steps per configuration; default 20 on a GPU, 4 on the CPU")
    p.add_argument("--warmup", type=int, help="untimed steps first; default 5 on a GPU, 1 on the CPU")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--precisions", help=f"comma-separated, from {', '.join(PRECISIONS)}; "
                   f"default {DEFAULTS['cuda']['precisions']} on a GPU, {DEFAULTS['cpu']['precisions']} on the CPU")
    p.add_argument("--rounds", type=int, default=1, help="repeat every configuration, in rotating order; "
                   "report the median run")
    p.add_argument("--threads", type=int, help="CPU threads per measuring process (OMP_NUM_THREADS); "
                   "1 is steadier on a shared machine")
    p.add_argument("--compile", action="store_true", help="also measure each configuration under torch.compile")
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.add_argument("--child", nargs=3, metavar=("METHOD", "PRECISION", "COMPILE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.device == "auto":
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = "cuda" if a.device.startswith("cuda") else "cpu"
    gpu = kind == "cuda"
    for key in ("batch", "frames", "layers", "steps", "warmup"):
        if getattr(a, key) is None:
            setattr(a, key, DEFAULTS[kind][key])
    a.method_list = [m.strip() for m in a.methods.split(",") if m.strip()]
    a.precision_list = [q.strip() for q in (a.precisions or DEFAULTS[kind]["precisions"]).split(",") if q.strip()]
    for m in a.method_list:
        if m not in METHODS:
            p.error(f"--methods: unknown method {m!r}; known: {', '.join(METHODS)}")
    for q in a.precision_list:
        if q not in PRECISIONS:
            p.error(f"--precisions: unknown precision {q!r}; known: {', '.join(PRECISIONS)}")
        if PRECISIONS[q][2] and not gpu:
            p.error(f"--precisions: {q} needs a CUDA device")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.child:
        method, precision, compile = a.child
        row = measure(method, precision, device=a.device, batch=a.batch, frames=a.frames, steps=a.steps,
                      warmup=a.warmup, compile=bool(int(compile)), shape={"num_hidden_layers": a.layers})
        print(json.dumps(row))
        return 0
    configs = [(m, q, c) for c in ([False, True] if a.compile else [False])
               for m in a.method_list for q in a.precision_list]
    runs: dict = {config: [] for config in configs}
    for round_ in range(a.rounds):  # each round in another order, so that a slow spell hits all alike
        shift = round_ % len(configs)
        for config in configs[shift:] + configs[:shift]:
            runs[config].append(run_child(a, *config))
            print(f"  round {round_ + 1}: {' '.join(config[:2])}{' compiled' if config[2] else ''} "
                  f"{runs[config][-1]['samples_per_s']:.2f} samples/s", file=sys.stderr, flush=True)
    rows = [median_run(runs[config]) for config in configs]
    r0 = rows[0]
    print(f"AST ({r0['layers']} layers, d {r0['hidden']}, attention {r0['attention']}), {r0['device']}, "
          f"torch {r0['torch']}, {r0['threads']} threads; batch {a.batch} x {a.frames} frames ({r0['tokens']} tokens), "
          f"{a.warmup} warm-up + {a.steps} timed steps each, median of {a.rounds} round(s); peak = {r0['peak_kind']}")
    print(table(rows))
    if any(r["attention"] != "sdpa" for r in rows):
        print("NOTE: transformers did not use SDPA attention for every row (see the JSON's attention field)")
    print("thr = samples/s, mem = peak memory; x/full: against full fine-tuning at the same precision; "
          "x/fp32: against the same method in fp32" + ("; compile x: compiled / eager samples/s" if a.compile else ""))
    if a.json:
        from surgeon.io.atomic import write_text_atomic

        meta = {k: getattr(a, k) for k in ("device", "batch", "frames", "layers", "steps", "warmup", "rounds",
                                           "threads", "compile")}
        write_text_atomic(a.json, json.dumps({"settings": meta, "rows": rows}, indent=2) + "\n", force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
