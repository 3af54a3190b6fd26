"""Helpers shared by the benchmarks: a cache folder, timing of subprocesses, big random checkpoints."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
BIN = Path(sys.executable).parent


def surgeon_cmd(*args) -> list[str]:
    return [str(BIN / "surgeon"), *map(str, args)]


def time_command(cmd: list[str], env=None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def interleaved_medians(commands: dict[str, list[str]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each command, run round-robin so that machine load affects all alike."""
    for _ in range(warmup):
        for cmd in commands.values():
            time_command(cmd)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            samples[name].append(time_command(cmd))
    return {name: statistics.median(s) for name, s in samples.items()}


def random_checkpoint(out: Path, config, model_class: str, seed: int = 0) -> Path:
    """Save a model of `config`'s shape with random weights, written tensor by tensor (no full model
    in memory), in the classic key names transformers writes. Cached: reused when present."""
    if (out / "config.json").exists():
        return out
    import torch
    import transformers

    from surgeon.anatomy import detect_family
    from surgeon.io.atomic import atomic_output
    from surgeon.io.writer import TensorSpec, st_dtype, write_checkpoint

    with torch.device("meta"):
        model = getattr(transformers, model_class)(config)
    family = detect_family(config.to_dict())
    state = model.state_dict()
    specs = [TensorSpec(family.translate(k, "memory", "disk"), st_dtype(t.dtype), tuple(t.shape)) for k, t in state.items()]
    gen = torch.Generator().manual_seed(seed)

    def produce(spec):
        if spec.dtype != "F32":
            return torch.zeros(spec.shape, dtype=getattr(torch, "int64"))
        return torch.randn(spec.shape, generator=gen) * 0.02

    with atomic_output(out, force=True) as tmp:
        write_checkpoint(tmp, specs, produce)
        config.architectures = [model_class]
        config.to_json_file(tmp / "config.json")
    return out


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 1024**3:.2f} GiB"


def env_threads(n: int = 2) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(n)}
