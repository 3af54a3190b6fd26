"""Where training runs: device and precision, and the multi-process set-up.

A plain `surgeon train` is one process on the CPU or one GPU. With `--nproc N` (surgeon.train.launch)
or under torchrun, every process reads RANK, WORLD_SIZE and LOCAL_RANK, joins the process group (NCCL
on GPUs, gloo on CPUs) and trains a DistributedDataParallel copy on its slice of every global batch
(surgeon.train.sampling); evaluation is sharded and the tallies are gathered, so every sample counts
once and every rank sees the same metrics (and picks the same best epoch). Only rank 0 writes.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from surgeon.errors import SurgeonError
from surgeon.onednn import cap_amx

cap_amx()  # before any CPU kernel runs: bf16 on AMX CPUs is otherwise NaN on some runs (see surgeon/onednn.py)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    device: torch.device
    precision: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=DTYPES[self.precision])

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (the values themselves in one process)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)  # gloo: CPU, NCCL: this GPU
        torch.distributed.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank ([obj] in one process)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SurgeonError("train.device: 'cuda' requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise SurgeonError("train.precision: fp16 needs a CUDA device (this run is on the CPU); use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SurgeonError("train.precision: this GPU does not support bf16; use fp16 or fp32")


def setup(device: str = "auto", precision: str = "fp32", tf32: bool = True) -> Runtime:
    """The runtime of this process; joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    check_precision(precision, dev)
    if world > 1 and not torch.distributed.is_initialized():
        from surgeon.train.launch import die_with_launcher

        die_with_launcher()  # a worker of `surgeon train --nproc N`: no orphan outlives a killed launcher
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":  # TensorFloat-32 matmuls and convolutions (Ampere and newer); fp32 storage kept
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return Runtime(dev, precision, rank, world, local)


def teardown(runtime: Runtime) -> None:
    if runtime.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
