"""`surgeon sweep`: MAM's lam chosen on a dev split (paper 003), merged weights evaluated in memory."""
from __future__ import annotations

from typing import List, Optional

import typer

from surgeon_cli.commands.train import SET_HELP
from surgeon_cli.options import option
from surgeon_cli.render import console, print_json


def sweep(
    recipe: str = typer.Argument(..., help="Recipe file or bundled recipe name: the task, data and dev split."),
    lam: str = typer.Option(..., "--lam", help="The values to try, a comma list: 0.05,0.1,0.25 (0: the target alone)."),
    source: Optional[str] = typer.Option(None, "--source", help="Source model (default: the recipe's [merge] source)."),
    layers: Optional[str] = typer.Option(
        None, "--layers", help="Target layers to merge: 12-19 or 0,3,5 (default: the recipe's [merge] layers, else all)."),
    bias: Optional[bool] = typer.Option(None, "--bias/--no-bias", help="Merge the q/k/v biases too (default: the recipe's, else yes)."),
    model: Optional[str] = typer.Option(None, "--model", help="The target model (directory, alias) instead of the recipe's."),
    split: str = typer.Option("valid", "--split", help="valid (the dev set, the paper's choice) or test."),
    metric: Optional[str] = typer.Option(None, "--metric", help="The metric that picks lam (default: the recipe's eval.select)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    fold: Optional[int] = typer.Option(None, "--fold", help="The fold whose dev split is used (default: the first)."),
    seed: Optional[int] = option("seed", more="The cell's seed used (default: the recipe's first)."),
    out: Optional[str] = option("out", more="Write the model merged at the best lam here."),
    force: bool = option("force", False),
    as_json: bool = option("json", False, more="The table."),
):
    """Merge at every --lam in memory, score each on the recipe's dev split, print the table and pick
    the best (optionally writing only that merged model)."""
    from surgeon.io.atomic import check_output
    from surgeon.recipes.load import load_recipe
    from surgeon.speech.lam_sweep import parse_lams, sweep as run, write_best

    values = parse_lams(lam)
    r = load_recipe(recipe, set_ or [])
    inputs = [p for p in (model, source, r._source) if p]
    if out is not None:
        check_output(out, force=force, inputs=inputs)  # fail before evaluating anything
    doc = run(r, values, source=source, layers=layers, bias=bias, model_ref=model, split=split, metric=metric,
              fold=fold, seed=seed, keep_best=out is not None)
    if out is not None:
        doc["out"] = str(write_best(doc, out, force=force, inputs=inputs))
        doc.pop("_model")
    if as_json:
        print_json(doc)
        return
    _render(doc)


def _render(doc: dict) -> None:
    from rich.table import Table

    names = [k for k in doc["rows"][0] if k != "lam"]
    best = doc["best"]["lam"]
    table = Table(title=f"lam on the {doc['split']} split ({doc['num_items']} items, cell {doc['cell']}); "
                        f"{doc['metric']}, {'higher' if doc['higher_is_better'] else 'lower'} is better")
    table.add_column("lam", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    table.add_column("")
    for row in doc["rows"]:
        table.add_row(f"{row['lam']:g}", *(f"{row[n]:.4f}" for n in names), "best" if row["lam"] == best else "")
    out = console()
    out.print(f"target {doc['model']}, source {doc['source']}, layers {_span(doc['layers'])}, "
              f"{'weights and biases' if doc['bias'] else 'weights only'}")
    out.print(table)
    out.print(f"best: lam {best:g} ({doc['metric']} {doc['best'][doc['metric']]:.4f})")
    if doc.get("out"):
        out.print(f"wrote {doc['out']}")


def _span(layers: list[int]) -> str:
    if layers and layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))
