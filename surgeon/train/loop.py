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


class CellTrainer:
    """One cell's training in named steps, as torchtune's recipes are written:

        setup()        optimiser, schedule, grad scaler, a resumed state, the DDP / compiled network
        train_epoch()  one pass over the training batches (resumed mid-epoch where a checkpoint was taken)
        train_batch()  forward, loss, backward of one batch; optimizer_step() at accumulation boundaries
        end_epoch()    validation, the epoch's metrics line, select(), checkpoint(), a stop request
        finish()       why training stopped early (train.max_steps, train.patience), the selected weights

    Every decision (where to resume, when to stop, which epoch is selected) is a function of the
    checkpointed Progress, so a resumed cell ends bit for bit like an uninterrupted one."""

    def __init__(self, model, task, recipe, loaders: dict, runtime, *, num_labels: int, log, reporter, cell: str,
                 merge_hooks=None, checkpoints=None, stop=None):
        self.model, self.task, self.recipe, self.loaders, self.runtime = model, task, recipe, loaders, runtime
        self.num_labels, self.log, self.reporter, self.cell = num_labels, log, reporter, cell
        self.merge_hooks, self.checkpoints, self.stop = merge_hooks, checkpoints, stop
        self.t = recipe.train
        self.select_metric = recipe.eval.select
        self.higher = task.higher_is_better.get(self.select_metric, True)

    # -- set-up ----------------------------------------------------------------------------------
    def setup(self, resume_from: Path | None = None) -> None:
        from surgeon.api import parameter_groups
        from surgeon.train.model import method_name
        from surgeon.train.optim import build_optimizer, build_scheduler, no_decay_parameters

        t, runtime = self.t, self.runtime
        lrs = t.group_lrs(method_name(self.recipe))
        self.optimizer = build_optimizer(parameter_groups(self.model), lrs, betas=t.betas, eps=t.eps,
                                         weight_decay=t.weight_decay, no_decay=no_decay_parameters(self.model))
        self.train_loader = self.loaders["train"]
        self.sampler = self.train_loader.batch_sampler
        self.total = self.sampler.total  # global batches per epoch
        if self.total == 0:
            raise SurgeonError(f"data: {self.sampler.n} training items cannot be shared by {runtime.world_size} "
                               "processes (each needs at least one); use fewer processes")
        if t.patience and not len(self.loaders["valid"].dataset):
            raise SurgeonError("train.patience: early stopping watches the validation split, which is empty here")
        steps = math.ceil(self.total / t.grad_accum) * t.epochs
        if t.max_steps:  # the schedule ends where training does
            steps = min(steps, t.max_steps)
        self.scheduler = build_scheduler(self.optimizer, steps, t.warmup_steps, t.scheduler)
        self.scaler = torch.amp.GradScaler("cuda") if runtime.precision == "fp16" else None
        self.training = Training(self.model, self.optimizer, self.scheduler, self.scaler, runtime, self.checkpoints,
                                 self.log)
        if resume_from is not None:
            self.training.resume(resume_from)
        self.net = self._network()
        self.params = [q for g in self.optimizer.param_groups for q in g["params"]]
        self.every = self.checkpoints.every_steps if self.checkpoints is not None else 0

    def _network(self):
        net, runtime = self.model, self.runtime
        if runtime.distributed:
            ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            # frozen weights are identical on every rank (same checkpoint, same seed): only the trainable
            # parameters (and buffers, e.g. BatchNorm statistics) are synchronised
            frozen = [n for n, q in self.model.named_parameters() if not q.requires_grad]
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.model, frozen)
            net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.t.compile:
            net = torch.compile(net)
        return net

    @property
    def progress(self):
        return self.training.progress

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> tuple[int, dict, list[dict]]:
        """Train; returns (selected epoch, its validation metrics, per-epoch history)."""
        p = self.progress
        first = p.epoch + 1 if p.epoch_done else p.epoch
        for epoch in range(first, self.t.epochs + 1):
            resuming = epoch == p.epoch and not p.epoch_done
            if not resuming and self.stop_reason():  # resumed after the stop: nothing left to train
                break
            started = time.monotonic()
            tally = self.train_epoch(epoch, resuming)
            self.end_epoch(epoch, tally, started)
            if self.stop_reason():
                break
        return self.finish()

    # -- one epoch -------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, resuming: bool):
        p, t = self.progress, self.t
        skip = p.batches_done if resuming else 0
        self.train_loader.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip)
        self.net.train()
        tally = self._epoch_tally(resuming)
        if not resuming:
            p.counters = {"hits": 0, "seen": 0, "skipped": 0}
        p.epoch, p.batches_done, p.epoch_done = epoch, skip, False
        self.reporter.start(self.cell, epoch, t.epochs, self.total)
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches(self.train_loader), skip + 1):
            if self.steps_exhausted():
                break
            self.train_batch(epoch, i, batch, tally)
        return tally

    def _epoch_tally(self, resuming: bool):
        """The train tally of the epoch: empty, or the checkpointed one of a resumed epoch."""
        p, runtime = self.progress, self.runtime
        tally = self.task.new_tally(self.num_labels)
        if resuming and p.tally:
            mine = p.tally[runtime.rank] if runtime.rank < len(p.tally) else None
            if mine is not None:
                tally.load_state_dict(mine)
            if runtime.is_main and len(p.tally) > runtime.world_size:  # fewer processes now: keep every count
                for extra in p.tally[runtime.world_size:]:
                    other = self.task.new_tally(self.num_labels)
                    other.load_state_dict(extra)
                    tally.merge(other)
        return tally

    # -- one batch, one optimiser step -----------------------------------------------------------
    def train_batch(self, epoch: int, i: int, batch: dict, tally) -> None:
        from surgeon.train.signals import Interrupted

        p, t, runtime, stop = self.progress, self.t, self.runtime, self.stop
        at_step_boundary = (i - 1) % t.grad_accum == 0
        local_n = 0 if batch["input_values"].numel() == 0 else len(batch["keys"])
        wants_stop = 1.0 if (stop is not None and stop.signum and at_step_boundary) else 0.0
        global_n, empty, stopping = runtime.sum([local_n, float(local_n == 0), wants_stop])
        if stopping:
            where = self.training.save(tally)
            raise Interrupted(f"interrupted by {stop.name or 'a signal'} at epoch {epoch}, step {p.step}; "
                              f"checkpoint: {where}; continue with --resume", stop.signum or 15)
        p.counters["skipped"] += len(batch["skipped"])
        if empty:  # nothing readable in (some process's slice of) this batch
            p.batches_done = i
            return
        p.counters["hits"] += batch["cache_hits"]
        p.counters["seen"] += len(batch["keys"])
        batch = to_device(batch, runtime.device)
        with runtime.autocast():
            out = self.task.forward(self.net, batch)
            loss = self.task.loss(out, batch)
        if runtime.sum([0.0 if torch.isfinite(loss) else 1.0])[0]:
            raise SurgeonError(f"train: the loss became {loss.item()} at epoch {epoch}, step {p.step + 1} "
                               f"(batch {i}); the run stopped; {self.training.last_good()}; "
                               "lower train.lr, set train.clip or use fp32")
        scaled = loss / t.grad_accum
        if runtime.distributed:  # DDP averages over processes: weight each by its share of the batch
            scaled = scaled * (local_n * runtime.world_size / global_n)
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        tally.add(out.detach().float(), batch, loss.item())
        p.batches_done = i
        if i % t.grad_accum == 0 or i == self.total:
            self.optimizer_step(epoch, i, loss, tally)
        self.reporter.step(i, self.total, loss.item())

    def optimizer_step(self, epoch: int, i: int, loss, tally) -> None:
        p, t, scaler, optimizer = self.progress, self.t, self.scaler, self.optimizer
        if scaler:
            scaler.unscale_(optimizer)
        if t.clip:
            torch.nn.utils.clip_grad_norm_(self.params, t.clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        p.step += 1
        line = {"event": "step", "cell": self.cell, "epoch": epoch, "step": p.step, "loss": loss.item(),
                "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}}
        if self.merge_hooks is not None and hasattr(self.merge_hooks, "step_log"):  # Learnable-MAM's lam
            line.update(self.merge_hooks.step_log(p.step))
        self.log(line)
        # the epoch's end has its own checkpoint, and so has the end of training at train.max_steps
        if self.every and p.step % self.every == 0 and i < self.total and not self.steps_exhausted():
            self.checkpoint(tally)

    # -- the end of an epoch ---------------------------------------------------------------------
    def end_epoch(self, epoch: int, tally, started: float) -> None:
        from surgeon.train.signals import Interrupted

        line = self.epoch_line(epoch, tally, started)
        self.log(line)
        self.progress.history.append(line)
        self.reporter.message(_epoch_text(line, self.select_metric))
        self.select(epoch, line)
        self.progress.epoch_done = True
        where = self.checkpoint(None)
        stop = self.stop
        if stop is not None and self.runtime.sum([1.0 if stop.signum else 0.0])[0]:
            raise Interrupted(f"interrupted by {stop.name or 'a signal'} after epoch {epoch}; checkpoint: {where}; "
                              "continue with --resume", stop.signum or 15)

    def epoch_line(self, epoch: int, tally, started: float) -> dict:
        """The epoch's metrics.jsonl line: train and validation metrics, cache counters, the merge's
        values (Learnable-MAM's lams) and, for MoA, each expert's share per layer on validation."""
        from surgeon.train.experts import ExpertRecorder

        runtime = self.runtime
        train_metrics = _gathered(tally, runtime).result()
        recorder = ExpertRecorder(self.model, self.num_labels)
        valid = self.loaders["valid"]
        valid_metrics = (evaluate(self.model, self.task, valid, runtime, self.num_labels, recorder=recorder)
                         if len(valid.dataset) else {})
        c = self.progress.counters
        line = {"event": "epoch", "cell": self.cell, "epoch": epoch,
                **{f"train_{k}": v for k, v in train_metrics.items()},
                **{f"valid_{k}": v for k, v in valid_metrics.items()},
                "cache_hits": c["hits"], "cache_misses": c["seen"] - c["hits"], "skipped": c["skipped"],
                "seconds": round(time.monotonic() - started, 3)}
        if self.merge_hooks is not None and hasattr(self.merge_hooks, "log"):
            line.update(self.merge_hooks.log())
        experts = recorder.result()
        if experts:
            line["experts"] = dict(zip(experts["layers"], experts["per_layer"]))
        return line

    def select(self, epoch: int, line: dict) -> None:
        """Keep this epoch when it is the best on validation so far (or eval.checkpoint = "last")."""
        p, t = self.progress, self.t
        score = line.get(f"valid_{self.select_metric}")
        better = p.best_epoch is None or score is None or (score > p.best_score if self.higher else score < p.best_score)
        if self.recipe.eval.checkpoint == "last" or better:
            final = epoch == t.epochs or self.stop_reason() is not None  # the final weights are in the model
            keep = self.recipe.eval.checkpoint == "best" and not final
            p.best_epoch, p.best_score = epoch, score
            self.training.best_weights = (trainable_state(self.model), buffers_state(self.model)) if keep else None

    def checkpoint(self, tally) -> Path | None:
        return self.training.save(tally)

    # -- stopping early --------------------------------------------------------------------------
    def steps_exhausted(self) -> bool:
        return bool(self.t.max_steps) and self.progress.step >= self.t.max_steps

    def stale_epochs(self) -> int:
        """Epochs since the best validation score (ties are no improvement)."""
        scores = [h.get(f"valid_{self.select_metric}") for h in self.progress.history]
        if not scores or any(s is None for s in scores):
            return 0
        best = max(scores) if self.higher else min(scores)
        return len(scores) - 1 - scores.index(best)

    def stop_reason(self) -> str | None:
        """Why training ends before train.epochs, or None: a function of the checkpointed progress."""
        if self.steps_exhausted():
            return "max_steps"
        if self.t.patience and self.stale_epochs() >= self.t.patience:
            return "patience"
        return None

    def finish(self) -> tuple[int, dict, list[dict]]:
        p = self.progress
        reason = self.stop_reason()
        if reason and p.history:
            detail = (f"train.max_steps = {self.t.max_steps} reached" if reason == "max_steps" else
                      f"valid {self.select_metric} did not improve for {self.t.patience} epochs (train.patience)")
            self.log({"event": "stop", "cell": self.cell, "epoch": p.epoch, "step": p.step, "reason": reason})
            self.reporter.message(f"{self.cell}: stopped after epoch {p.epoch}: {detail}")
        self.reporter.close()
        if self.training.best_weights is not None:  # restore the selected epoch's weights
            state, buffers = self.training.best_weights
            with torch.no_grad():
                named = dict(self.model.named_parameters())
                for n, v in state.items():
                    named[n].copy_(v)
                named_b = dict(self.model.named_buffers())
                for n, v in buffers.items():
                    named_b[n].copy_(v)
        chosen = next(h for h in p.history if h["epoch"] == p.best_epoch)
        return p.best_epoch, {k[len("valid_"):]: v for k, v in chosen.items() if k.startswith("valid_")}, p.history


def fit(model, task, recipe, loaders: dict, runtime, *, num_labels: int, log, reporter, cell: str,
        merge_hooks=None, checkpoints=None, resume_from: Path | None = None, stop=None) -> tuple[int, dict, list[dict]]:
    """Train one cell; returns (selected epoch, its validation metrics, per-epoch history).

    checkpoints (resume.Checkpoints): where to write resumable states, every `every_steps` optimiser
    steps and at each epoch end; resume_from: a state to continue from; stop (signals.StopRequest):
    a signal received ends the run after the current step with a checkpoint."""
    trainer = CellTrainer(model, task, recipe, loaders, runtime, num_labels=num_labels, log=log, reporter=reporter,
                          cell=cell, merge_hooks=merge_hooks, checkpoints=checkpoints, stop=stop)
    trainer.setup(resume_from)
    return trainer.run()


def _epoch_text(line: dict, select: str) -> str:
    parts = [f"{line['cell']} epoch {line['epoch']}", f"train loss {line.get('train_loss', 0):.4f}"]
    for key in ("train_accuracy", f"valid_{select}", "valid_loss"):
        if key in line:
            parts.append(f"{key.replace('_', ' ')} {line[key]:.4f}")
    parts.append(f"{line['seconds']:.1f}s")
    return ", ".join(parts)
