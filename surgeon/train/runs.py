"""`surgeon train` and `surgeon eval`: the run directory.

    <run>/recipe.toml           the resolved recipe (every default spelled out, paths absolute)
    <run>/metrics.jsonl         one JSON line per optimiser step ("event": "step") and per epoch ("epoch")
    <run>/results.json          per cell (fold x seed): selected epoch, validation and test metrics,
                                expert contributions; "summary": mean, std (sample, n-1) and n per metric
    <run>/checkpoints/<cell>/   the trained parameters of the selected epoch (surgeon.api.save_surgery)
    <run>/plots/<cell>-curves.png, <cell>-experts-layers.png, <cell>-experts-classes.png

A cell is one split (fold1..foldK, official, Session1..) with one seed (the few-shot seeds, or
train.seeds, or train.seed). The directory grows in a hidden work directory beside it (with resumable checkpoints,
see surgeon.train.resume) and appears whole when training ends; an existing one is replaced only
with --force.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from surgeon.errors import SurgeonError


def default_out(recipe) -> Path:
    if recipe.output.dir:
        return Path(recipe.output.dir)
    return Path("runs") / Path(str(recipe._source or "recipe")).stem


def cache_dir(recipe) -> Path | None:
    import os

    if not recipe.data.cache:
        return None
    if recipe.data.cache_dir:
        return Path(recipe.data.cache_dir)
    base = os.environ.get("SURGEON_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "surgeon")
    return Path(base) / "features"


def load_dataset(recipe):
    """The recipe's dataset index (load_index checks the format and its data.options)."""
    from surgeon.data import load_index

    d = recipe.data
    return load_index(d.format, d.root, **d.options)


def plan_cells(recipe, index, fold: int | None = None, seed: int | None = None):
    """The recipe's cells (surgeon.train.cells.Cell, with their split and training items) in run order."""
    from surgeon.data import few_shot, splits_for
    from surgeon.train.cells import Cell

    d = recipe.data
    splits = splits_for(index, d.protocol, fold if fold is not None else d.fold, d.valid_from_train, recipe.train.seed)
    if d.few_shot is not None:
        seeds = [seed] if seed is not None else d.few_shot.seeds
    else:
        seeds = [seed] if seed is not None else (recipe.train.seeds or [recipe.train.seed])
    cells = []
    for split in splits:
        for s in seeds:
            train = few_shot(split.train, d.few_shot.k, s, index.num_classes) if d.few_shot else split.train
            cells.append(Cell(f"{split.name}-seed{s}", None, s, split=split, train=train))
    return cells


def feature_spec(recipe, model):
    """The features the model expects, with the recipe's length, sample rate and SpecAugment."""
    from surgeon.data import feature_spec_for
    from surgeon.hf import family_of_model

    d = recipe.data
    overrides = {"max_frames": d.max_frames, "max_seconds": d.max_seconds}
    if d.sample_rate is not None:
        overrides["sample_rate"] = d.sample_rate
    if d.features != "auto":
        overrides["kind"] = d.features
    if d.specaugment is not None:
        overrides.update(freq_mask=d.specaugment.freq_mask, time_mask=d.specaugment.time_mask)
    pre = _preprocessor_config(recipe)
    if pre is not None:
        overrides["preprocessor_config"] = pre
    return feature_spec_for(model.config.to_dict(), family_of_model(model).name, **overrides)


def _preprocessor_config(recipe) -> dict | None:
    if not recipe.model.ref:
        return None
    try:
        from surgeon.refs import resolve

        path = resolve(recipe.model.ref) / "preprocessor_config.json"
    except SurgeonError:
        return None
    return json.loads(path.read_text()) if path.is_file() else None


def prepare_cell(recipe, index, train_items, split, seed: int, offline_model: str | None = None):
    """Seeded model (with head, positions and method) and the three datasets of one cell."""
    from surgeon.data import AudioDataset
    from surgeon.train.loop import seed_everything
    from surgeon.train.model import build_model

    seed_everything(seed)
    model, spec, merge_hooks = build_model(recipe, index.classes, offline_model=offline_model,
                                           feature_spec=lambda m: feature_spec(recipe, m))
    common = dict(spec=spec, cache_dir=cache_dir(recipe), on_error=recipe.data.on_error, seed=seed,
                  synthetic=index.synthetic)
    datasets = {
        "train": AudioDataset(train_items, train=True, mixup=mixup_spec(recipe, index), **common),
        "valid": AudioDataset(split.valid, **common),
        "test": AudioDataset(split.test, **common),
    }
    if len(datasets["train"]) == 0:
        raise SurgeonError(f"data: the training split of {split.name} is empty")
    return model, datasets, merge_hooks


def mixup_spec(recipe, index):
    from surgeon.data.mixup import MixupSpec

    m = recipe.data.mixup
    return MixupSpec(m.probability, m.alpha, m.mix, index.num_classes) if m is not None else None


def run_cell(recipe, index, cell, runtime, *, log, reporter, out: Path | None, offline_model=None,
             checkpoints=None, resume_from=None, stop=None, run_dir: Path | None = None):
    from surgeon.train.experts import ExpertRecorder
    from surgeon.train.loop import CellResult, evaluate_tally, fit, make_loader
    from surgeon.train.tasks import get_task

    name, split, seed = cell.name, cell.split, cell.seed
    started = time.monotonic()
    task = get_task(recipe.model.task)
    model, datasets, merge_hooks = prepare_cell(recipe, index, cell.train, split, seed, offline_model)
    model.to(runtime.device)
    t = recipe.train
    eval_bs = recipe.eval.batch_size or t.batch_size
    common = dict(seed=seed, workers=t.workers, runtime=runtime, prefetch=t.prefetch)
    loaders = {
        "train": make_loader(datasets["train"], t.batch_size, shuffle=True, **common),
        "valid": make_loader(datasets["valid"], eval_bs, shuffle=False, **common),
        "test": make_loader(datasets["test"], eval_bs, shuffle=False, **common),
    }
    n = index.num_classes
    counts = {k: len(v) for k, v in datasets.items()}
    procs = f", {runtime.world_size} processes" if runtime.distributed else ""
    reporter.message(f"{name}: train {counts['train']}, valid {counts['valid']}, test {counts['test']} items, "
                     f"{n} classes, device {runtime.device}{procs}"
                     + (f"; resuming from {resume_from.name}" if resume_from else ""))
    epoch, valid, history = fit(model, task, recipe, loaders, runtime, num_labels=n, log=log, reporter=reporter,
                                cell=name, merge_hooks=merge_hooks, checkpoints=checkpoints,
                                resume_from=resume_from, stop=stop)
    recorder = ExpertRecorder(model, n)
    tally = evaluate_tally(model, task, loaders["test"], runtime, n, recorder=recorder) if counts["test"] else None
    test = tally.result() if tally else {}
    test, valid = reported(recipe, task, test), reported(recipe, task, valid)
    skipped = sorted({k for ds in datasets.values() for k in ds.skipped})
    result = CellResult(name=name, split=split.name, seed=seed, counts=counts, best_epoch=epoch, valid=valid,
                        test=test, history=history, experts=recorder.result(), skipped=skipped)
    if out is not None:
        save_checkpoint(model, out / "checkpoints" / name, card=cell_card(model, recipe, index, result, run_dir or out))
        if merge_hooks is not None and hasattr(merge_hooks, "finish"):
            result.test.update(merge_hooks.finish(model, out / "checkpoints" / name) or {})
        if recipe.output.plots:
            write_plots(result, index.classes, out / "plots")
        if hasattr(tally, "details"):  # e.g. speech recognition: worst utterances, edit breakdown
            (out / "details").mkdir(exist_ok=True)
            (out / "details" / f"{name}-test.json").write_text(json.dumps(tally.details(), indent=2) + "\n")
    line = {"event": "cell", "cell": name, "best_epoch": epoch, **{f"test_{k}": v for k, v in test.items()}}
    if result.experts:  # each expert's share per layer on the test split
        line["experts"] = dict(zip(result.experts["layers"], result.experts["per_layer"]))
    log(line)
    reporter.message(f"{name}: selected epoch {epoch} on validation; test "
                     + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    result.seconds = round(time.monotonic() - started, 2)
    return result


def check_metrics(recipe) -> None:
    """eval.metrics and eval.select must be metrics of the recipe's task (checked before any work)."""
    from surgeon.train.tasks import get_task

    task = get_task(recipe.model.task)
    for key, names in (("eval.metrics", recipe.eval.metrics or []), ("eval.select", [recipe.eval.select])):
        unknown = [m for m in names if m not in task.metrics]
        if unknown:
            raise SurgeonError(f"{key}: {unknown[0]!r} is not a metric of the {task.name} task "
                               f"(its metrics: {', '.join(task.metrics)})")


def reported(recipe, task, metrics: dict) -> dict:
    """The metrics the recipe asks for (eval.metrics; default all of the task's)."""
    wanted = recipe.eval.metrics or list(task.metrics)
    return {k: v for k, v in metrics.items() if k in wanted}


def save_checkpoint(model, out: Path, card=None) -> None:
    """The cell's final weights in the work directory (replacing those of an attempt killed after
    saving them and before the cell was recorded as finished)."""
    from surgeon.api import save_surgery

    out.parent.mkdir(parents=True, exist_ok=True)
    save_surgery(model, out, force=True, card=card)


def cell_card(model, recipe, index, result, run_dir: Path):
    """The model card of a cell's checkpoint: the recipe and data it was trained on, its metrics."""
    from surgeon.api import parameter_counts, surgery
    from surgeon.cards import surgery_card

    metrics = {**{f"test_{k}": v for k, v in result.test.items()}, **{f"valid_{k}": v for k, v in result.valid.items()}}
    trained = (f"recipe {recipe._source}, cell {result.name}: {len(result.history)} epochs, epoch "
               f"{result.best_epoch} selected on validation")
    data = f"data: {index.name}" + (f" at {index.root}" if index.root else "") + f", {index.num_classes} classes"
    card = surgery_card(surgery(model), parameters=parameter_counts(model), metrics=metrics,
                        made_from=[trained, data], notes=[f"A checkpoint of the run {run_dir}; `surgeon export "
                                                          f"{run_dir / 'checkpoints' / result.name} --out DIR` turns "
                                                          "it into a model other tools load."])
    card.loading_path = str(run_dir / "checkpoints" / result.name)
    return card


def write_plots(result, labels: list[str], folder: Path) -> None:
    from surgeon.train import plots

    folder.mkdir(parents=True, exist_ok=True)
    plots.curves(result.history, folder / f"{result.name}-curves.png", result.name, selected=result.best_epoch)
    if result.experts:
        plots.expert_layers(result.experts, folder / f"{result.name}-experts-layers.png",
                            f"{result.name}: expert contribution per layer")
    if result.experts and "per_class" in result.experts:
        plots.expert_classes(result.experts, labels, folder / f"{result.name}-experts-classes.png",
                             f"{result.name}: expert contribution per class")


def summarize(cells: list[dict]) -> dict:
    """Mean, sample standard deviation and count of every test and validation metric over cells."""
    summary = {}
    for part in ("test", "valid"):
        keys = sorted({k for c in cells for k in c[part]})
        for k in keys:
            values = [c[part][k] for c in cells if k in c[part] and isinstance(c[part][k], (int, float))]
            if values:
                summary[f"{part}_{k}"] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else None,  # no spread from one value
                    "n": len(values),
                }
    return summary


ELAPSED = "elapsed.json"  # in the work directory: the run's seconds so far, over every session


def earlier_seconds(work_path: Path) -> float:
    try:
        return float(json.loads((work_path / ELAPSED).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


class TimedLog:
    """The run log, noting the run's elapsed seconds (earlier sessions included) beside it at each line."""

    def __init__(self, log, path: Path | None, started: float, earlier: float):
        self._log, self._path, self._started, self._earlier = log, path, started, earlier

    def elapsed(self) -> float:
        return self._earlier + time.monotonic() - self._started

    def __call__(self, line) -> None:
        self._log(line)
        if self._path is not None:
            (self._path / ELAPSED).write_text(json.dumps({"seconds": round(self.elapsed(), 3)}) + "\n")

    def __getattr__(self, name):
        return getattr(self._log, name)


def check_model_ref(recipe) -> None:
    """The model must be found before the run directory is looked at: the recipe's fault first."""
    from surgeon.recipes.load import model_ref_problem

    problem = model_ref_problem(recipe.model.ref)
    if problem:
        raise SurgeonError(f"{recipe._source}: {problem}")


def check_run(recipe, *, fold=None, seed=None, out: Path, force: bool = False, resume: str | None = None) -> None:
    """Everything train_recipe would refuse before training (output, resume, dataset, metrics), checked
    without writing: the launcher of several processes calls it so bad input is one line, once."""
    from surgeon.train.loggers import check_loggers
    from surgeon.train.workdir import WorkDir

    check_metrics(recipe)
    check_loggers(recipe)
    check_model_ref(recipe)
    index = load_dataset(recipe)
    cells = plan_cells(recipe, index, fold, seed)
    inputs = [p for p in (recipe.data.root, recipe.model.surgery, recipe._source) if p]
    work = WorkDir.open(recipe, out, [c.name for c in cells], force=force, resume=resume, inputs=inputs, writer=False)
    from surgeon.io.lock import OutputLock

    OutputLock(work.out, "run").release()  # a run of it in progress: refused before any worker starts


def train_recipe(recipe, *, fold: int | None = None, seed: int | None = None, out=None, force: bool = False,
                 resume: str | None = None, reporter=None, offline_model: str | None = None) -> Path | None:
    """Train every cell of a recipe and write the run directory; returns its path (None on the
    ranks other than 0 of a distributed run, which write nothing).

    The run grows in a work directory (surgeon.train.resume) that becomes the run directory when
    every cell is done; resume="auto" (or the path of the run or of its work directory) continues an
    interrupted run from its newest checkpoint."""
    from surgeon import __version__
    from surgeon.train import dist
    from surgeon.train.loggers import RunLog, check_loggers
    from surgeon.train.progress import Reporter
    from surgeon.train.resume import Checkpoints
    from surgeon.train.signals import StopRequest
    from surgeon.train.workdir import WorkDir

    check_metrics(recipe)
    check_loggers(recipe)
    if offline_model is None:
        check_model_ref(recipe)
    out = Path(out) if out is not None else default_out(recipe)
    inputs = [p for p in (recipe.data.root, recipe.model.surgery, recipe._source) if p]
    runtime = dist.setup(recipe.train.device, recipe.train.precision, recipe.train.tf32)
    try:
        reporter = reporter or Reporter(enabled=runtime.is_main)
        index = load_dataset(recipe)
        cells = plan_cells(recipe, index, fold, seed)
        work = WorkDir.open(recipe, out, [c.name for c in cells], force=force, resume=resume, inputs=inputs,
                            writer=runtime.is_main)
        runtime.barrier()  # every process has checked before the work directory appears
        work.create()
        runtime.barrier()
        started = time.monotonic()
        done = work.finished_cells()
        log = RunLog(work.path if runtime.is_main else None, recipe.log.to, truncate_to=work.log_bytes())
        # a resumed run's time counts its earlier sessions too (each up to its last logged line)
        log = TimedLog(log, work.path if runtime.is_main else None, started, earlier_seconds(work.path) if resume else 0.0)
        results = []
        try:
            with StopRequest() as stop:
                for cell in cells:
                    name = cell.name
                    if name in done:
                        results.append(done[name])
                        continue
                    checkpoints = Checkpoints(work.path / "resume" / name, recipe.checkpoint.keep,
                                              recipe.checkpoint.every_steps)
                    r = run_cell(recipe, index, cell, runtime, log=log, reporter=reporter,
                                 out=work.path if runtime.is_main else None, offline_model=offline_model,
                                 checkpoints=checkpoints, resume_from=checkpoints.latest() if resume else None,
                                 stop=stop, run_dir=out)
                    result = {k: v for k, v in r.__dict__.items() if k != "history"}
                    if runtime.is_main:
                        work.finish_cell(name, result, log.tell())
                    results.append(result)
        finally:
            reporter.close()  # a failed epoch must not leave the progress bar on the terminal
            log.close()
        if runtime.is_main:
            doc = {
                "format": "surgeon-run/1",
                "surgeon_version": __version__,
                "recipe": str(recipe._source),
                "task": recipe.model.task,
                "method": [m.name for m in recipe.methods] or None,
                "dataset": {"format": index.name, "root": str(index.root) if index.root else None,
                            "classes": index.classes, "protocol": recipe.data.protocol or index.protocol},
                "device": str(runtime.device),
                "processes": runtime.world_size,
                "selected_on": f"valid_{recipe.eval.select}",
                "checkpoint": recipe.eval.checkpoint,
                "seconds": round(log.elapsed(), 2),
                "cells": results,
                "summary": summarize(results),
                "skipped": sorted({k for r in results for k in r["skipped"]}),
            }
            (work.path / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
            (work.path / ELAPSED).unlink(missing_ok=True)  # in results.json now
            work.complete(force=force)
        runtime.barrier()
    except BaseException:
        if runtime.is_main and "work" in locals():
            work.abandon()  # removes the work directory only when it holds nothing to resume from
        raise
    finally:
        dist.teardown(runtime)
    return out if runtime.is_main else None


def evaluate_recipe(recipe, *, run: Path | None = None, model_ref: str | None = None, fold=None, seed=None,
                    reporter=None) -> dict:
    """Test metrics of a trained run's checkpoints (or of a model reference) on the recipe's test splits."""
    from surgeon.train import dist
    from surgeon.train.experts import ExpertRecorder
    from surgeon.train.loop import evaluate_tally, make_loader
    from surgeon.train.progress import Reporter
    from surgeon.train.tasks import get_task

    if (run is None) == (model_ref is None):
        raise SurgeonError("eval: give exactly one of --run DIR or --model REF")
    if model_ref is not None:
        recipe = with_model(recipe, model_ref)
    check_metrics(recipe)
    runtime = dist.setup(recipe.train.device, recipe.train.precision, recipe.train.tf32)
    reporter = reporter or Reporter(enabled=runtime.is_main)
    task = get_task(recipe.model.task)
    index = load_dataset(recipe)
    cells = plan_cells(recipe, index, fold, seed)
    if run is not None:  # the cells the run trained (it may have been one --fold / --seed)
        cells = [c for c in cells if (Path(run) / "checkpoints" / c.name).is_dir()]
        if not cells:
            raise SurgeonError(f"{run}: no checkpoints of this recipe's cells (checkpoints/<cell>); "
                               "is it a run of this recipe?")
    out = []
    for cell in cells:
        name, split, s = cell.name, cell.split, cell.seed
        model, datasets, _ = prepare_cell(recipe, index, cell.train, split, s)
        if run is not None:
            load_trained(model, Path(run) / "checkpoints" / name)
        model.to(runtime.device)
        loader = make_loader(datasets["test"], recipe.eval.batch_size or recipe.train.batch_size, shuffle=False,
                             seed=s, workers=recipe.train.workers, runtime=runtime, prefetch=recipe.train.prefetch)
        recorder = ExpertRecorder(model, index.num_classes)
        tally = evaluate_tally(model, task, loader, runtime, index.num_classes, recorder=recorder)
        test = reported(recipe, task, tally.result())
        reporter.message(f"{name}: test " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
        out.append({"name": name, "split": split.name, "seed": s, "counts": {"test": len(datasets["test"])},
                    "valid": {}, "test": test, "experts": recorder.result(),
                    "skipped": sorted(datasets["test"].skipped),
                    # per-utterance results where the task has them (speech recognition: surgeon compare)
                    **({"details": tally.details()} if hasattr(tally, "details") else {})})
    dist.teardown(runtime)
    return {"format": "surgeon-eval/1", "recipe": str(recipe._source), "run": str(run) if run else None,
            "model": model_ref, "cells": out, "summary": summarize(out)}


def with_model(recipe, ref: str):
    """The recipe evaluated on another model: a surgery directory or a model reference, no new method."""
    path = Path(ref)
    model = recipe.model.model_copy(update={"ref": None, "tiny": None, "surgery": None, "config": {},
                                            "init": "pretrained"})
    if (path / "surgery.json").is_file():
        model = model.model_copy(update={"surgery": str(path)})
    else:
        model = model.model_copy(update={"ref": ref})
    new = recipe.model_copy(update={"model": model, "method": None, "merge": None})
    new._source = recipe._source
    return new


def load_trained(model, folder: Path) -> None:
    """Load a run checkpoint's parameters (adapter.safetensors, in-memory names) into a rebuilt model."""
    from safetensors.torch import load_file

    file = folder / "adapter.safetensors"
    if not file.is_file():
        raise SurgeonError(f"{folder}: no adapter.safetensors")
    state = load_file(str(file))
    missing_in_model = sorted(set(state) - set(model.state_dict()))
    if missing_in_model:
        raise SurgeonError(f"{file}: {len(missing_in_model)} tensors do not fit the recipe's model "
                           f"(first: {missing_in_model[0]}); is it the same recipe?")
    model.load_state_dict(state, strict=False)
