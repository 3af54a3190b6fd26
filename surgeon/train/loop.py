"""One training cell (one fold x one seed): train for the recipe's epochs, evaluate on validation data
after every epoch, keep the best epoch's trainable weights (selected on validation, never on test),
then evaluate that epoch on the test split.

Determinism: the cell seeds Python, NumPy and torch from its seed, shuffles with a seeded generator
and masks SpecAugment per (seed, epoch, item), so the same seed gives the same metrics bit for bit on
the CPU (with workers = 0 or more: features do not depend on the worker).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch

from surgeon.errors import SurgeonError


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class CellResult:
    name: str
    split: str
    seed: int
    counts: dict
    best_epoch: int
    valid: dict
    test: dict
    history: list[dict] = field(default_factory=list)
    experts: dict | None = None
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def buffers_state(model) -> dict[str, torch.Tensor]:
    # BatchNorm statistics (Conformer adapter) change during training and belong to the best epoch too
    return {n: b.detach().clone() for n, b in model.named_buffers()}


# DataLoader re-raises a worker's exception as the same type with the worker's traceback folded into
# the message ("Caught SurgeonError in DataLoader worker process 0. Original Traceback ... SurgeonError: <message>")
WORKER_ERROR = "surgeon.errors.SurgeonError: "


def batches(loader):
    """Iterate a DataLoader; a SurgeonError raised in a worker process reaches the user as its own
    one-line message, as it would with workers = 0."""
    try:
        yield from loader
    except SurgeonError as e:
        text = str(e)
        if text.startswith("Caught SurgeonError") and WORKER_ERROR in text:
            raise SurgeonError(text.rsplit(WORKER_ERROR, 1)[1]) from None
        raise


def evaluate(model, task, loader, runtime, num_labels: int, recorder=None) -> dict:
    return evaluate_tally(model, task, loader, runtime, num_labels, recorder).result()


@torch.no_grad()
def evaluate_tally(model, task, loader, runtime, num_labels: int, recorder=None):
    """Run the model over `loader` and return the task's tally (its result() holds the metrics; a
    tally with details(), like CTC's worst utterances, has more to report)."""
    model.eval()
    tally = task.new_tally(num_labels)
    for batch in batches(loader):
        if batch["input_values"].numel() == 0:
            continue
        batch = to_device(batch, runtime.device)
        with runtime.autocast():
            out = task.forward(model, batch)
            loss = task.loss(out, batch)
        tally.add(out.float(), batch, float(loss))
        if recorder:
            recorder.add(batch["labels"])
    return tally


def make_loader(dataset, batch_size: int, *, shuffle: bool, seed: int, workers: int, runtime):
    from surgeon.data import collate

    sampler = None
    generator = torch.Generator().manual_seed(seed)
    if runtime.distributed and shuffle:
        sampler = torch.utils.data.distributed.DistributedSampler(
            dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        generator=generator, num_workers=workers, collate_fn=collate,
        # workers are started afresh every epoch so they see the dataset's epoch (SpecAugment masks)
        pin_memory=runtime.device.type == "cuda", persistent_workers=False,
    )


def fit(model, task, recipe, loaders: dict, runtime, *, num_labels: int, log, reporter, cell: str,
        merge_hooks=None) -> tuple[int, dict, list[dict]]:
    """Train; returns (selected epoch, its validation metrics, per-epoch history)."""
    from surgeon.api import parameter_groups
    from surgeon.train.model import method_name
    from surgeon.train.optim import build_optimizer, build_scheduler

    t = recipe.train
    lrs = t.group_lrs(method_name(recipe))
    optimizer = build_optimizer(parameter_groups(model), lrs, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)
    train_loader = loaders["train"]
    steps_per_epoch = math.ceil(len(train_loader) / t.grad_accum)
    scheduler = build_scheduler(optimizer, steps_per_epoch * t.epochs, t.warmup_steps, t.scheduler)
    scaler = torch.amp.GradScaler("cuda") if runtime.precision == "fp16" else None
    net = model
    if runtime.distributed:
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    select = recipe.eval.select
    higher = task.higher_is_better.get(select, True)
    best = (None, None, None, None)  # epoch, metrics, trainable state, buffers
    history = []
    step = 0
    for epoch in range(1, t.epochs + 1):
        started = time.monotonic()
        train_loader.dataset.set_epoch(epoch)
        if isinstance(train_loader.sampler, torch.utils.data.distributed.DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        net.train()
        tally = task.new_tally(num_labels)
        hits = seen = skipped = 0
        reporter.start(cell, epoch, t.epochs, len(train_loader))
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches(train_loader), 1):
            skipped += len(batch["skipped"])
            if batch["input_values"].numel() == 0:
                continue
            hits += batch["cache_hits"]
            seen += len(batch["keys"])
            batch = to_device(batch, runtime.device)
            with runtime.autocast():
                out = task.forward(net, batch)
                loss = task.loss(out, batch)
            if not torch.isfinite(loss):
                raise SurgeonError(f"train: the loss became {loss.item()} at epoch {epoch} step {i}; "
                                   "lower train.lr or use fp32")
            scaled = loss / t.grad_accum
            (scaler.scale(scaled) if scaler else scaled).backward()
            tally.add(out.detach().float(), batch, loss.item())
            if i % t.grad_accum == 0 or i == len(train_loader):
                if scaler:
                    scaler.unscale_(optimizer)
                if t.clip:
                    torch.nn.utils.clip_grad_norm_(params, t.clip)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                log({"event": "step", "cell": cell, "epoch": epoch, "step": step, "loss": loss.item(),
                     "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}})
            reporter.step(i, len(train_loader), loss.item())
        train_metrics = tally.result()
        valid_metrics = evaluate(model, task, loaders["valid"], runtime, num_labels) if len(loaders["valid"]) else {}
        line = {"event": "epoch", "cell": cell, "epoch": epoch,
                **{f"train_{k}": v for k, v in train_metrics.items()},
                **{f"valid_{k}": v for k, v in valid_metrics.items()},
                "cache_hits": hits, "cache_misses": seen - hits, "skipped": skipped,
                "seconds": round(time.monotonic() - started, 3)}
        if merge_hooks is not None and hasattr(merge_hooks, "log"):
            line.update(merge_hooks.log())
        log(line)
        history.append(line)
        reporter.message(_epoch_text(line, select))
        score = valid_metrics.get(select)
        better = best[0] is None or score is None or (score > best[1] if higher else score < best[1])
        if recipe.eval.checkpoint == "last" or better:
            keep = recipe.eval.checkpoint == "best" and epoch < t.epochs  # the last epoch is in the model
            best = (epoch, score, trainable_state(model) if keep else None, buffers_state(model) if keep else None)
    reporter.close()
    epoch, _, state, buffers = best
    if state is not None:  # restore the selected epoch's weights
        with torch.no_grad():
            named = dict(model.named_parameters())
            for n, v in state.items():
                named[n].copy_(v)
            named_b = dict(model.named_buffers())
            for n, v in buffers.items():
                named_b[n].copy_(v)
    chosen = next(h for h in history if h["epoch"] == epoch)
    return epoch, {k[len("valid_"):]: v for k, v in chosen.items() if k.startswith("valid_")}, history


def _epoch_text(line: dict, select: str) -> str:
    parts = [f"{line['cell']} epoch {line['epoch']}", f"train loss {line.get('train_loss', 0):.4f}"]
    for key in ("train_accuracy", f"valid_{select}", "valid_loss"):
        if key in line:
            parts.append(f"{key.replace('_', ' ')} {line[key]:.4f}")
    parts.append(f"{line['seconds']:.1f}s")
    return ", ".join(parts)
