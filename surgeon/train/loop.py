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
from pathlib import Path

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
    tally with details(), like CTC's worst utterances, has more to report). With several processes
    each one evaluates its shard and the tallies (and the expert recorder) are gathered, so every
    process returns the tally of the whole split."""
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
    if runtime.distributed and recorder:
        recorder.gather(runtime)
    return _gathered(tally, runtime)


def _gathered(tally, runtime):
    """The tally of every process merged, in rank order (the same sums everywhere)."""
    if not runtime.distributed:
        return tally
    parts = runtime.gather(tally)
    for other in parts[1:]:
        parts[0].merge(other)
    return parts[0]


def make_loader(dataset, batch_size: int, *, shuffle: bool, seed: int, workers: int, runtime, prefetch: int = 2):
    """Training (shuffle=True): this process's slice of every global batch (sampling.GlobalBatchSampler,
    the caller sets its epoch). Evaluation: this process's shard, in order."""
    from surgeon.data import collate
    from surgeon.train.sampling import GlobalBatchSampler, ShardSampler
    from surgeon.train.signals import ignore_interrupts_in_worker

    common = dict(num_workers=workers, collate_fn=collate, generator=torch.Generator().manual_seed(seed),
                  pin_memory=runtime.device.type == "cuda",
                  # workers are started afresh every epoch so they see the dataset's epoch (SpecAugment masks)
                  persistent_workers=False,
                  worker_init_fn=ignore_interrupts_in_worker if workers else None,
                  prefetch_factor=prefetch if workers else None)
    if shuffle:
        sampler = GlobalBatchSampler(len(dataset), batch_size, seed=seed, rank=runtime.rank, world=runtime.world_size)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **common)
    shard = ShardSampler(len(dataset), runtime.rank, runtime.world_size)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=shard, **common)


class Training:
    """The state of one cell's training that a checkpoint must capture, and the checkpointing itself."""

    def __init__(self, model, optimizer, scheduler, scaler, runtime, checkpoints, log):
        from surgeon.train.resume import Progress

        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.runtime, self.checkpoints, self.log = runtime, checkpoints, log
        self.progress = Progress()
        self.best_weights = None  # (trainable state, buffers) of the best epoch when it is not the current one

    def resume(self, path: Path) -> None:
        from surgeon.train import resume

        tensors, meta = resume.load(path)
        self.progress = resume.restore(path, tensors, meta, self.model, self.optimizer, self.scheduler,
                                       self.scaler, self.runtime)
        self.best_weights = resume.best_weights(tensors)

    def save(self, tally) -> Path | None:
        """Write a checkpoint of the state now (all processes call it; rank 0 writes); returns its path."""
        from surgeon.train import resume

        if self.checkpoints is None:
            return None
        p = self.progress
        p.tally = self.runtime.gather(tally.state_dict()) if tally is not None else None
        p.log_bytes = self.log.tell()
        p.seq += 1
        tensors, meta = resume.capture(self.model, self.optimizer, self.scheduler, self.scaler, p, self.runtime,
                                       best=self.best_weights)
        if self.runtime.is_main:
            return self.checkpoints.write(p.seq, tensors, meta)
        return self.checkpoints.path(p.seq)

    def last_good(self) -> str:
        latest = self.checkpoints.latest() if self.checkpoints is not None else None
        return f"last good checkpoint: {latest}" if latest else "no checkpoint was written before it"


def fit(model, task, recipe, loaders: dict, runtime, *, num_labels: int, log, reporter, cell: str,
        merge_hooks=None, checkpoints=None, resume_from: Path | None = None, stop=None) -> tuple[int, dict, list[dict]]:
    """Train; returns (selected epoch, its validation metrics, per-epoch history).

    checkpoints (resume.Checkpoints): where to write resumable states, every `every_steps` optimiser
    steps and at each epoch end; resume_from: a state to continue from; stop (signals.StopRequest):
    a signal received ends the run after the current step with a checkpoint."""
    from surgeon.api import parameter_groups
    from surgeon.train.model import method_name
    from surgeon.train.optim import build_optimizer, build_scheduler
    from surgeon.train.signals import Interrupted

    t = recipe.train
    lrs = t.group_lrs(method_name(recipe))
    optimizer = build_optimizer(parameter_groups(model), lrs, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)
    train_loader = loaders["train"]
    sampler = train_loader.batch_sampler
    total = sampler.total  # global batches per epoch
    if total == 0:
        raise SurgeonError(f"data: {sampler.n} training items cannot be shared by {runtime.world_size} processes "
                           "(each needs at least one); use fewer processes")
    steps_per_epoch = math.ceil(total / t.grad_accum)
    scheduler = build_scheduler(optimizer, steps_per_epoch * t.epochs, t.warmup_steps, t.scheduler)
    scaler = torch.amp.GradScaler("cuda") if runtime.precision == "fp16" else None
    training = Training(model, optimizer, scheduler, scaler, runtime, checkpoints, log)
    if resume_from is not None:
        training.resume(resume_from)
    p = training.progress
    net = model
    if runtime.distributed:
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        # frozen weights are identical on every rank (same checkpoint, same seed): only the trainable
        # parameters (and buffers, e.g. BatchNorm statistics) are synchronised
        frozen = [n for n, q in model.named_parameters() if not q.requires_grad]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if t.compile:
        net = torch.compile(net)
    params = [q for g in optimizer.param_groups for q in g["params"]]
    select = recipe.eval.select
    higher = task.higher_is_better.get(select, True)
    every = checkpoints.every_steps if checkpoints is not None else 0
    first_epoch = p.epoch + 1 if p.epoch_done else p.epoch
    for epoch in range(first_epoch, t.epochs + 1):
        started = time.monotonic()
        resuming = epoch == p.epoch and not p.epoch_done
        skip = p.batches_done if resuming else 0
        train_loader.dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, skip)
        net.train()
        tally = task.new_tally(num_labels)
        if resuming and p.tally:
            mine = p.tally[runtime.rank] if runtime.rank < len(p.tally) else None
            if mine is not None:
                tally.load_state_dict(mine)
            if runtime.is_main and len(p.tally) > runtime.world_size:  # fewer processes now: keep every count
                for extra in p.tally[runtime.world_size:]:
                    other = task.new_tally(num_labels)
                    other.load_state_dict(extra)
                    tally.merge(other)
        else:
            p.counters = {"hits": 0, "seen": 0, "skipped": 0}
        p.epoch, p.batches_done, p.epoch_done = epoch, skip, False
        reporter.start(cell, epoch, t.epochs, total)
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches(train_loader), skip + 1):
            at_step_boundary = (i - 1) % t.grad_accum == 0
            local_n = 0 if batch["input_values"].numel() == 0 else len(batch["keys"])
            wants_stop = 1.0 if (stop is not None and stop.signum and at_step_boundary) else 0.0
            global_n, empty, stopping = runtime.sum([local_n, float(local_n == 0), wants_stop])
            if stopping:
                where = training.save(tally)
                raise Interrupted(f"interrupted by {stop.name or 'a signal'} at epoch {epoch}, step {p.step}; "
                                  f"checkpoint: {where}; continue with --resume", stop.signum or 15)
            p.counters["skipped"] += len(batch["skipped"])
            if empty:  # nothing readable in (some process's slice of) this batch
                p.batches_done = i
                continue
            p.counters["hits"] += batch["cache_hits"]
            p.counters["seen"] += len(batch["keys"])
            batch = to_device(batch, runtime.device)
            with runtime.autocast():
                out = task.forward(net, batch)
                loss = task.loss(out, batch)
            if runtime.sum([0.0 if torch.isfinite(loss) else 1.0])[0]:
                raise SurgeonError(f"train: the loss became {loss.item()} at epoch {epoch}, step {p.step + 1} "
                                   f"(batch {i}); the run stopped; {training.last_good()}; "
                                   "lower train.lr, set train.clip or use fp32")
            scaled = loss / t.grad_accum
            if runtime.distributed:  # DDP averages over processes: weight each by its share of the batch
                scaled = scaled * (local_n * runtime.world_size / global_n)
            (scaler.scale(scaled) if scaler else scaled).backward()
            tally.add(out.detach().float(), batch, loss.item())
            p.batches_done = i
            if i % t.grad_accum == 0 or i == total:
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
                p.step += 1
                log({"event": "step", "cell": cell, "epoch": epoch, "step": p.step, "loss": loss.item(),
                     "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}})
                if every and p.step % every == 0 and i < total:  # the epoch's end has its own checkpoint
                    training.save(tally)
            reporter.step(i, total, loss.item())
        train_metrics = _gathered(tally, runtime).result()
        valid_metrics = evaluate(model, task, loaders["valid"], runtime, num_labels) if len(loaders["valid"].dataset) else {}
        c = p.counters
        line = {"event": "epoch", "cell": cell, "epoch": epoch,
                **{f"train_{k}": v for k, v in train_metrics.items()},
                **{f"valid_{k}": v for k, v in valid_metrics.items()},
                "cache_hits": c["hits"], "cache_misses": c["seen"] - c["hits"], "skipped": c["skipped"],
                "seconds": round(time.monotonic() - started, 3)}
        if merge_hooks is not None and hasattr(merge_hooks, "log"):
            line.update(merge_hooks.log())
        log(line)
        p.history.append(line)
        reporter.message(_epoch_text(line, select))
        score = valid_metrics.get(select)
        better = p.best_epoch is None or score is None or (score > p.best_score if higher else score < p.best_score)
        if recipe.eval.checkpoint == "last" or better:
            keep = recipe.eval.checkpoint == "best" and epoch < t.epochs  # the last epoch is in the model
            p.best_epoch, p.best_score = epoch, score
            training.best_weights = (trainable_state(model), buffers_state(model)) if keep else None
        p.epoch_done = True
        where = training.save(None)
        if stop is not None and runtime.sum([1.0 if stop.signum else 0.0])[0]:
            raise Interrupted(f"interrupted by {stop.name or 'a signal'} after epoch {epoch}; checkpoint: {where}; "
                              "continue with --resume", stop.signum or 15)
    reporter.close()
    if training.best_weights is not None:  # restore the selected epoch's weights
        state, buffers = training.best_weights
        with torch.no_grad():
            named = dict(model.named_parameters())
            for n, v in state.items():
                named[n].copy_(v)
            named_b = dict(model.named_buffers())
            for n, v in buffers.items():
                named_b[n].copy_(v)
    chosen = next(h for h in p.history if h["epoch"] == p.best_epoch)
    return p.best_epoch, {k[len("valid_"):]: v for k, v in chosen.items() if k.startswith("valid_")}, p.history



def _epoch_text(line: dict, select: str) -> str:
    parts = [f"{line['cell']} epoch {line['epoch']}", f"train loss {line.get('train_loss', 0):.4f}"]
    for key in ("train_accuracy", f"valid_{select}", "valid_loss"):
        if key in line:
            parts.append(f"{key.replace('_', ' ')} {line[key]:.4f}")
    parts.append(f"{line['seconds']:.1f}s")
    return ", ".join(parts)
