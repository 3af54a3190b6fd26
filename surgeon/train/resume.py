"""Resumable training state: what a checkpoint holds, how it is written, and how it is found again.

A run in progress lives in a work directory beside its output, renamed into place when it completes:

    <parent>/.<run name>.surgeon-partial/
        run.json                        identity: the resolved recipe (less launch/checkpoint settings), cells
        recipe.toml, metrics.jsonl      as in the finished run directory
        cells/<cell>.json               results of the cells already finished
        checkpoints/<cell>/ plots/      the finished cells' outputs
        resume/<cell>/ckpt-000007/      the newest `checkpoint.keep` training states of the running cell
            state.safetensors           trainable parameters, buffers, best epoch's weights, optimiser
                                        moments, torch RNG states (one per process)
            state.json                  epoch and batch position, step, scheduler, grad scaler, Python and
                                        NumPy RNG states, history, partial train tally, metrics.jsonl length

Each checkpoint directory is written under a temporary name and renamed, so a kill at any moment
leaves the previous checkpoint intact. Nothing here is pickled: tensors go to safetensors, the rest
to JSON (Python floats survive JSON exactly), so a resumed CPU run is bit-for-bit the same.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from surgeon.errors import SurgeonError

FORMAT = "surgeon-resume/1"
# recipe keys that may change between an interruption and its resumption (they do not change results)
VOLATILE = {"launch": None, "checkpoint": None, "log": None, "train": ("workers", "prefetch", "compile")}


def identity(recipe_doc: dict) -> dict:
    """The parts of a resolved recipe (model_dump) that a resumed run must share with the original."""
    doc = json.loads(json.dumps(recipe_doc))
    for section, keys in VOLATILE.items():
        if keys is None:
            doc.pop(section, None)
        else:
            for k in keys:
                doc.get(section, {}).pop(k, None)
    doc.get("output", {}).pop("dir", None)  # the work directory is found from it already
    return doc


def first_difference(a, b, path: str = "") -> str | None:
    """The dotted path of the first value that differs between two JSON documents, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    return None if a == b else f"{path}: {json.dumps(a)} then, {json.dumps(b)} now"


@dataclass
class Progress:
    """Where a cell's training stands (the JSON half of a checkpoint)."""

    epoch: int = 1               # the epoch in progress (or just finished, with epoch_done)
    batches_done: int = 0        # global batches of that epoch already trained on
    epoch_done: bool = False     # validation of `epoch` is done: resume at epoch + 1
    step: int = 0                # optimiser steps so far
    seq: int = 0                 # checkpoints written so far (names the next one)
    history: list = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    tally: list | None = None    # per process: the train tally of the epoch in progress
    counters: dict = field(default_factory=lambda: {"hits": 0, "seen": 0, "skipped": 0})
    log_bytes: int = 0           # length of metrics.jsonl when the state was taken


class Checkpoints:
    """The resumable states of one cell: `keep` newest under <work>/resume/<cell>/."""

    def __init__(self, folder: Path, keep: int = 2, every_steps: int = 0):
        self.folder, self.keep, self.every_steps = Path(folder), keep, every_steps

    def all(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.name.startswith("ckpt-") and (p / "state.json").is_file())

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def path(self, seq: int) -> Path:
        return self.folder / f"ckpt-{seq:06d}"

    def write(self, seq: int, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
        from safetensors.torch import save_file

        final = self.path(seq)
        tmp = self.folder / f".ckpt-{seq:06d}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta) + "\n")
        _fsync_dir(tmp)
        if final.exists():  # left by a run killed after this rename and before the next one
            shutil.rmtree(final)
        os.rename(tmp, final)
        for old in self.all()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


def _fsync_dir(folder: Path) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())


# -- taking and restoring a state -------------------------------------------------------------------

def rng_state() -> dict:
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"python": [version, list(internal), gauss_next],
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}


def set_rng_state(state: dict) -> None:
    import numpy as np

    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))


def torch_rng() -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def capture(model, optimizer, scheduler, scaler, progress: Progress, runtime, best=None) -> tuple[dict, dict]:
    """(tensors, JSON) of a training state. Collective: every process must call it (RNG states are
    gathered); only rank 0's result is written."""
    tensors: dict[str, torch.Tensor] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            tensors[f"param/{n}"] = p.detach().cpu()
    for n, b in model.named_buffers():
        tensors[f"buffer/{n}"] = b.detach().cpu()
    if best is not None:
        state, buffers = best
        tensors.update({f"best_param/{n}": v.cpu() for n, v in state.items()})
        tensors.update({f"best_buffer/{n}": v.cpu() for n, v in buffers.items()})
    opt = optimizer.state_dict()
    for idx, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"optim/{idx}/{key}"] = value.detach().cpu() if torch.is_tensor(value) else torch.tensor(value)
    rngs = runtime.gather({"torch": torch_rng(), "host": rng_state()})
    for rank, r in enumerate(rngs):
        for kind, t in r["torch"].items():
            tensors[f"rng/{rank}/{kind}"] = t
    meta = {
        "format": FORMAT,
        "progress": progress.__dict__,
        "world_size": runtime.world_size,
        "host_rng": [r["host"] for r in rngs],
        "optimizer_groups": opt["param_groups"],
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "params": {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad},
    }
    return tensors, meta


def load(path: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    try:
        meta = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
    except (OSError, ValueError) as e:
        raise SurgeonError(f"{path}: not a readable training checkpoint ({e})") from None
    if meta.get("format") != FORMAT:
        raise SurgeonError(f"{path}: not a surgeon training checkpoint (format {meta.get('format')!r})")
    return tensors, meta


def check_fits(path: Path, meta: dict, model) -> None:
    """A checkpoint of another model or method: one clear line before anything is overwritten."""
    ours = {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    theirs = meta["params"]
    if ours != theirs:
        extra = sorted(set(theirs) - set(ours)) or sorted(set(ours) - set(theirs))
        detail = (f"first differing parameter: {extra[0]}" if extra else
                  next(f"{n}: {theirs[n]} there, {ours[n]} here" for n in ours if ours[n] != theirs[n]))
        raise SurgeonError(f"{path}: this checkpoint's trainable parameters do not fit the recipe's model "
                           f"({detail}); it is from another model or method")


def restore(path: Path, tensors: dict, meta: dict, model, optimizer, scheduler, scaler, runtime) -> Progress:
    check_fits(path, meta, model)
    with torch.no_grad():
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        for key, value in tensors.items():
            kind, _, name = key.partition("/")
            if kind == "param":
                params[name].copy_(value)
            elif kind == "buffer" and name in buffers:
                buffers[name].copy_(value)
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, slot = key.split("/", 2)
            state.setdefault(int(idx), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta["scaler"]:
        scaler.load_state_dict(meta["scaler"])
    # each process continues with its own RNG streams (the first ones when the process count changed)
    source = runtime.rank if runtime.rank < meta["world_size"] else 0
    set_rng_state(meta["host_rng"][source])
    torch.set_rng_state(tensors[f"rng/{source}/cpu"])
    if f"rng/{source}/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[f"rng/{source}/cuda"], runtime.device)
    return Progress(**meta["progress"])


def best_weights(tensors: dict) -> tuple[dict, dict] | None:
    state = {k[len("best_param/"):]: v for k, v in tensors.items() if k.startswith("best_param/")}
    buffers = {k[len("best_buffer/"):]: v for k, v in tensors.items() if k.startswith("best_buffer/")}
    return (state, buffers) if state else None
