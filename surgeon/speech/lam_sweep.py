"""`surgeon sweep`: choose MAM's lam on a dev split, as paper 003 does (section 4.1: "we use a dev set to
select the interpolation lam"; 0.25 LJ Speech, 0.05 VCTK, 0.1 ESC-50).

The recipe's model is built once, as `surgeon eval --model` builds it (its task, data and features;
no method, no merge), and each lam is evaluated on merged weights in memory: the merged layers' q/k/v
are restored from a copy, `recipe_merge.static_merge` applies lam (the arithmetic of `surgeon merge`),
and the recipe's evaluation path scores the split. Nothing is written per value; `write_best` writes
the best merged model, the very weights that were scored.

The dev split is the validation split of the recipe's first cell (`--fold`, `--seed` choose another).
Ties keep the smaller lam (the one nearer the unmerged target).
"""
from __future__ import annotations

from pathlib import Path

from surgeon.errors import SurgeonError

SPLITS = ("valid", "test")  # "test" only to reproduce a table; lam is chosen on "valid" (the dev set)


def parse_lams(text: str) -> list[float]:
    """'0.05,0.1,0.25' -> [0.05, 0.1, 0.25] (each in [0, 1], none twice)."""
    values = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            v = float(part)
        except ValueError:
            raise SurgeonError(f"--lam: {part!r} is not a number (expected a comma list such as 0.05,0.1,0.25)") from None
        if not 0.0 <= v <= 1.0:
            raise SurgeonError(f"--lam: {part} is outside [0, 1]")
        if v in values:
            raise SurgeonError(f"--lam: {part} is listed twice")
        values.append(v)
    return values


def pick_best(rows: list[dict], metric: str, higher: bool) -> dict:
    """The row with the best `metric`; among equals the smaller lam (nearer the unmerged target)."""
    return max(rows, key=lambda r: (r[metric] if higher else -r[metric], -r["lam"]))


def merge_source(recipe, source: str | None) -> str:
    if source is None:
        if recipe.merge is None:
            raise SurgeonError("sweep: no merge source: pass --source or give the recipe a [merge] table")
        source = recipe.merge.source
    return source


def merge_settings(recipe, source: str | None, layers: str | None, bias: bool | None, num_layers: int):
    """(source, layers, bias): the options, else the recipe's [merge] table."""
    from surgeon.merging.layers import parse_layers
    from surgeon.speech.recipe_merge import layer_plan

    section = recipe.merge
    source = merge_source(recipe, source)
    if layers is not None:
        chosen = parse_layers(layers, num_layers)
    elif section is not None:
        chosen, _ = layer_plan(section, num_layers)
    else:
        chosen = list(range(num_layers))
    if bias is None:
        bias = section.bias if section is not None else True
    return source, sorted(chosen), bias


def sweep(recipe, lams: list[float], *, source: str | None = None, layers: str | None = None,
          bias: bool | None = None, model_ref: str | None = None, split: str = "valid", metric: str | None = None,
          fold: int | None = None, seed: int | None = None, reporter=None, keep_best: bool = False) -> dict:
    """Evaluate the static merge at every lam on `split`; returns the table and the best row. With
    keep_best, the model merged at the best lam is returned too, under "_model" (for write_best)."""
    import torch

    from surgeon.hf import family_of_model, layer_module_path
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.speech.learnable_mam import ROLES
    from surgeon.speech.recipe_merge import static_merge
    from surgeon.train import dist
    from surgeon.train.loop import evaluate_tally, make_loader
    from surgeon.train.progress import Reporter
    from surgeon.train.runs import check_metrics, load_dataset, plan_cells, prepare_cell, reported, with_model
    from surgeon.train.tasks import get_task

    if split not in SPLITS:
        raise SurgeonError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if not lams:
        raise SurgeonError("--lam: no values")
    check_metrics(recipe)
    task = get_task(recipe.model.task)
    metric = metric or recipe.eval.select
    if metric not in task.metrics:
        raise SurgeonError(f"--metric: {metric!r} is not a metric of the {task.name} task "
                           f"(its metrics: {', '.join(task.metrics)})")
    higher = task.higher_is_better.get(metric, True)
    plain = with_model(recipe, model_ref) if model_ref else _without_merge(recipe)
    Checkpoint.open(merge_source(recipe, source))  # a source that cannot be read: before any model is built
    runtime = dist.setup(recipe.train.device, recipe.train.precision, recipe.train.tf32)
    reporter = reporter or Reporter(enabled=runtime.is_main)
    try:
        index = load_dataset(recipe)
        cell = plan_cells(recipe, index, fold, seed)[0]
        model, datasets, _ = prepare_cell(plain, index, cell.train, cell.split, cell.seed)
        data = datasets[split]
        if not len(data):
            raise SurgeonError(f"sweep: the {split} split of {cell.split.name} is empty (the dev set lam is chosen on); "
                               "give the data a validation split (data.valid_from_train) or pass --split test")
        source, chosen, bias = merge_settings(recipe, source, layers, bias, model.config.num_hidden_layers)
        model.to(runtime.device)
        family = family_of_model(model)
        linears = [model.get_submodule(layer_module_path(model, family, i, role)) for i in chosen for role in ROLES]
        saved = [{k: v.detach().clone() for k, v in lin.state_dict().items()} for lin in linears]
        loader = make_loader(data, recipe.eval.batch_size or recipe.train.batch_size, shuffle=False, seed=cell.seed,
                             workers=recipe.train.workers, runtime=runtime, prefetch=recipe.train.prefetch)
        rows = []
        for lam in lams:
            with torch.no_grad():
                for lin, state in zip(linears, saved):
                    lin.load_state_dict(state)
            static_merge(model, source, layers=chosen, lam=lam, bias=bias)
            result = evaluate_tally(model, task, loader, runtime, index.num_classes).result()
            scores = {metric: result[metric], **reported(recipe, task, result)}
            rows.append({"lam": lam, **scores})
            reporter.message(f"lam {lam:g}: {split} " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        best = pick_best(rows, metric, higher)
        doc = {"format": "surgeon-sweep/1", "recipe": str(recipe._source), "model": model_ref or _model_text(recipe),
               "source": str(source), "layers": chosen, "bias": bias, "cell": cell.name, "split": split,
               "num_items": len(data), "metric": metric, "higher_is_better": higher, "rows": rows, "best": best}
        if keep_best:
            with torch.no_grad():
                for lin, state in zip(linears, saved):
                    lin.load_state_dict(state)
            static_merge(model, source, layers=chosen, lam=best["lam"], bias=bias)
            doc["_model"] = model.to("cpu")
        return doc
    finally:
        dist.teardown(runtime)


def _without_merge(recipe):
    """The recipe's model as `surgeon eval` builds it: no method injected, no merge applied."""
    new = recipe.model_copy(update={"method": None, "merge": None})
    new._source = recipe._source
    return new


def _model_text(recipe) -> str:
    m = recipe.model
    return str(m.surgery or m.ref or (f"tiny {m.tiny}" if m.tiny else "the recipe's model"))


def write_best(doc: dict, out, *, force: bool = False, inputs=()) -> Path:
    """The model merged at the best lam (doc from sweep(keep_best=True)), with the target's tokenizer
    files and a model card; atomic."""
    from surgeon import cards
    from surgeon.io.atomic import atomic_output
    from surgeon.speech.recipe_merge import write_plain

    model, best = doc["_model"], doc["best"]
    with atomic_output(out, force=force, inputs=inputs) as tmp:
        write_plain(model, tmp)
        layers = ", ".join(map(str, doc["layers"]))
        tried = ", ".join(format(r["lam"], "g") for r in doc["rows"])
        cards.write_card(tmp, cards.model_card(
            f"{doc['model']} with attention merged from {doc['source']} at lam {best['lam']:g}",
            [f"target: {doc['model']}", f"source: {doc['source']}",
             f"merged q, k, v{' (weights and biases)' if doc['bias'] else ' (weights only)'} in layers {layers}: "
             "W = lam * W_source + (1 - lam) * W_target",
             f"lam {best['lam']:g} chosen among {tried} on the "
             f"{doc['split']} split ({doc['num_items']} items) of recipe {doc['recipe']}, by {doc['metric']} "
             f"({'higher' if doc['higher_is_better'] else 'lower'} is better)"],
            summary="Multimodal Attention Merging (paper 003), lam picked on a dev split: a plain transformers model.",
            metrics={f"{doc['split']}_{k}": v for k, v in best.items() if k != "lam"}), path=str(out))
    return Path(out)
