"""`surgeon train`, `surgeon eval`, `surgeon validate` and `surgeon recipes ls|cp`: recipes (issue 5)."""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from surgeon_cli.options import option

from surgeon_cli.render import console, human_count, print_json

SET_HELP = "Override a recipe key, TOML value syntax: --set train.lr=1e-3 --set data.root=/data/ESC-50-master."


LAUNCH = "Launch (several processes: torch's elastic launcher)"
SLURM = "Slurm (through submitit)"


def train(
    recipe: str = typer.Argument(..., help="Recipe file (TOML) or bundled recipe name (see 'surgeon recipes ls')."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    fold: Optional[int] = typer.Option(None, "--fold", help="Run only this fold (1-based)."),
    seed: Optional[int] = option("seed", more="Run one seed, this one, instead of train.seeds (it need not be "
                                              "among them)."),
    out: Optional[str] = option("out", more="The run directory (default: output.dir or runs/<recipe>)."),
    force: bool = option("force", False, more="(a run directory, or an interrupted run)."),
    resume: Optional[str] = typer.Option(
        None, "--resume", metavar="[auto|RUN]",
        help="Continue an interrupted run from its newest checkpoint: the run at --out (auto, the default "
             "when no value is given) or the run directory named."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Processes per node (one per GPU; gloo on CPUs).",
                                        rich_help_panel=LAUNCH),
    nnodes: Optional[int] = typer.Option(None, "--nnodes", help="Nodes taking part.", rich_help_panel=LAUNCH),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", help="This node's rank (0..nnodes-1).",
                                            rich_help_panel=LAUNCH),
    master_addr: Optional[str] = typer.Option(None, "--master-addr", help="Address of node 0 (several nodes).",
                                              rich_help_panel=LAUNCH),
    master_port: Optional[int] = typer.Option(None, "--master-port", help="Port on node 0 (default 29500).",
                                              rich_help_panel=LAUNCH),
    launcher: str = typer.Option("local", "--launcher", help="local: this machine; slurm: submit a job array.",
                                 rich_help_panel=SLURM),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition.", rich_help_panel=SLURM),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="GPUs (processes) per node.",
                                                rich_help_panel=SLURM),
    nodes: Optional[int] = typer.Option(None, "--nodes", help="Nodes per job.", rich_help_panel=SLURM),
    time_limit: Optional[str] = typer.Option(None, "--time", help="Time limit per job: minutes, HH:MM:SS or "
                                             "D-HH:MM:SS.", rich_help_panel=SLURM),
    dry_run: bool = option("dry_run", False, more="Here: the resolved recipe, the split counts and the plan (with "
                                                  "--launcher slurm: the sbatch script); nothing trained or submitted."),
    as_json: bool = option("json", False, more="(the run's results, or the dry run's plan)."),
):
    """Train from a recipe: select the best epoch on validation, report it on test, write a run directory.

    Checkpoints are written as it goes; a run that was killed continues with --resume."""
    from surgeon.errors import SurgeonError
    from surgeon.recipes.load import load_recipe

    if launcher not in ("local", "slurm"):
        raise SurgeonError(f"--launcher: expected 'local' or 'slurm', got {launcher!r}")
    slurm_only = {"--partition": partition, "--gpus-per-node": gpus_per_node, "--nodes": nodes, "--time": time_limit}
    if launcher == "local" and any(v is not None for v in slurm_only.values()):
        given = next(k for k, v in slurm_only.items() if v is not None)
        raise SurgeonError(f"{given}: a Slurm option; add --launcher slurm")
    r = load_recipe(recipe, set_ or [])
    if launcher == "slurm":
        from surgeon.train.slurm import slurm_train

        text = slurm_train(recipe, set_ or [], fold=fold, seed=seed, out=out, force=force, partition=partition,
                           gpus_per_node=gpus_per_node, nodes=nodes, time=time_limit, dry_run=dry_run)
        print_json({"launcher": "slurm", "dry_run": dry_run, "text": text}) if as_json else print(text)
        return
    from surgeon.train import launch

    plan = launch.resolve(r, nproc=nproc, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                          master_port=master_port)
    if dry_run:
        doc = dry_run_plan(r, fold=fold, seed=seed, out=out, processes=plan.processes)
        print_json(doc) if as_json else _render_dry_run(doc)
        return
    if plan.processes > 1 and not launch.inside_launcher():
        from pathlib import Path

        from surgeon.train.runs import check_run, default_out

        target = Path(out) if out is not None else default_out(r)
        check_run(r, fold=fold, seed=seed, out=target, force=force, resume=resume)  # bad input: one line, here
        launch.relaunch(plan, launch.worker_args(launch.recipe_argument(recipe), set_args=set_ or [], fold=fold,
                                                 seed=seed, out=target, force=force, resume=resume,
                                                 as_json=as_json))
        return
    train_here(r, fold=fold, seed=seed, out=out, force=force, resume=resume, as_json=as_json)


def train_here(recipe, as_json: bool = False, quiet: bool = False, **options):
    """Train a loaded recipe in this process (one of several, under a launcher) and print the summary
    (or, as_json, results.json with the run directory); returns the run directory."""
    import json

    from surgeon.train.runs import train_recipe

    path = train_recipe(recipe, **options)
    if path is not None and not quiet:  # None on the other ranks of a multi-process run
        doc = json.loads((path / "results.json").read_text())
        if as_json:
            print_json({"out": str(path), **doc})
        else:
            _print_summary(doc)
            print(f"run written to {path}")
    return path


def dry_run_plan(recipe, *, fold=None, seed=None, out=None, processes: int = 1) -> dict:
    """What `train` would do: the resolved recipe, each cell's split counts, the run directory."""
    from pathlib import Path

    from surgeon.train.runs import default_out, load_dataset, plan_cells

    index = load_dataset(recipe)
    cells = plan_cells(recipe, index, fold=fold, seed=seed)
    return {
        "recipe": str(recipe._source), "out": str(Path(out) if out is not None else default_out(recipe)),
        "processes": processes, "epochs": recipe.train.epochs,
        "data": {"format": index.name, "root": str(index.root) if index.root else None,
                 "num_items": len(index.items), "num_classes": index.num_classes},
        "cells": [{"name": c.name, "seed": c.seed, "split": c.split.name, "train": len(c.train),
                   "valid": len(c.split.valid), "test": len(c.split.test)} for c in cells],
        "resolved": recipe.model_dump(mode="json", exclude_none=True),
    }


def _render_dry_run(doc: dict) -> None:
    from surgeon.recipes.load import to_toml

    print(f"# {doc['recipe']}, resolved (every default spelled out)")
    print(to_toml(doc["resolved"]))
    d = doc["data"]
    print(f"data: {d['format']} at {d['root'] or '(built in)'}, {d['num_items']:,} items, {d['num_classes']} classes")
    print(f"plan: {len(doc['cells'])} cell(s) x {doc['epochs']} epochs, {doc['processes']} process(es), "
          f"into {doc['out']}")
    for c in doc["cells"]:
        print(f"  {c['name']}: train {c['train']:,} / valid {c['valid']:,} / test {c['test']:,}")
    print("nothing trained (--dry-run)")


def _print_summary(doc: dict) -> None:
    for name, s in doc["summary"].items():
        if name.startswith("test_"):
            std = f" +- {s['std']:.4f}" if s["n"] > 1 else ""
            print(f"{name}: {s['mean']:.4f}{std} (n={s['n']})")


def eval_(
    recipe: str = typer.Argument(..., help="Recipe file or bundled recipe name."),
    run: Optional[str] = typer.Option(None, "--run", help="A run directory written by 'surgeon train'."),
    model: Optional[str] = typer.Option(None, "--model", help="Evaluate this model (directory, surgery, alias) instead."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    fold: Optional[int] = typer.Option(None, "--fold", help="Only this fold."),
    seed: Optional[int] = option("seed", more="Evaluate one seed's cell, this one."),
    out: Optional[str] = option("out", more="The metrics file (default: RUN/eval.json)."),
    force: bool = option("force", False, more="(the metrics file; without it, an existing one is kept and the "
                                              "metrics are printed only)."),
    as_json: bool = option("json", False, more="(the metrics)."),
):
    """Evaluate a trained run (or a model) on the recipe's test split(s) and write the metrics."""
    import json
    from pathlib import Path

    from surgeon.errors import SurgeonError
    from surgeon.io.atomic import check_output, write_text_atomic
    from surgeon.recipes.load import load_recipe
    from surgeon.train.runs import evaluate_recipe

    r = load_recipe(recipe, set_ or [])
    if (run is None) == (model is None):
        raise SurgeonError("eval: give exactly one of --run DIR or --model REF")
    if out is None and run is None:
        raise SurgeonError("eval: --model needs --out FILE for the metrics")
    target = Path(out) if out is not None else Path(run) / "eval.json"
    try:
        check_output(target, force=force)
        keep = False
    except SurgeonError:
        if not (target.exists() and not force):
            raise  # an unsafe path: refused whatever is printed
        keep = True  # printing never needs --force: evaluate, print, leave the file as it is
    doc = evaluate_recipe(r, run=Path(run) if run else None, model_ref=model, fold=fold, seed=seed)
    if not keep:
        write_text_atomic(target, json.dumps(doc, indent=2) + "\n", force=force)
    if as_json:
        print_json(doc)
    else:
        _print_summary(doc)
        print(f"{target} exists: kept as it was (pass --force to replace it)" if keep
              else f"metrics written to {target}")


def validate(
    recipe: str = typer.Argument(..., help="Recipe file or bundled recipe name."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    offline_model: Optional[str] = typer.Option(
        None, "--offline-model",
        help="'tiny': check the method on a tiny model of the same family instead of the real checkpoint."),
    as_json: bool = option("json", False, more="(the report)."),
):
    """Resolve a recipe without training: model and method, dataset, device. Exit 2 on any problem."""
    from surgeon.errors import SurgeonError
    from surgeon.recipes.validate import validate_recipe

    if offline_model not in (None, "tiny"):
        raise SurgeonError(f"--offline-model: expected 'tiny', got {offline_model!r}")
    report = validate_recipe(recipe, set_ or [], offline_model=offline_model)
    if as_json:
        print_json(report)
    else:
        _render_validation(report)
    if report["problems"]:  # the report above leaves them out: each is said once, here, with its key
        from surgeon.recipes.load import problems_line

        raise SurgeonError(problems_line(report["recipe"], report["problems"]))


def _render_validation(report: dict) -> None:
    from rich.table import Table

    out = console()
    out.print(f"[bold]{report['recipe']}[/bold]")
    m = report.get("model")
    if m:
        sub = " (tiny stand-in)" if m.get("offline") else ""
        out.print(f"model   {m['source']}{sub}: {m['family']}, {human_count(m['total'])} parameters, "
                  f"task {m['task']}")
        table = Table("group", "parameters", "trainable", "learning rate", box=None, header_style="bold")
        for g in m["groups"]:
            table.add_row(g["group"], f"{g['parameters']:,}", f"{g['trainable']:,}", f"{g['lr']:g}")
        out.print(table)
        if m.get("methods"):
            for rec in m["methods"]:
                out.print(f"method  {rec['method']}: {rec.get('num_parameters', 0):,} added parameters")
    d = report.get("data")
    if d:
        out.print(f"data    {d['format']} at {d['root'] or '(built in)'}: {d['num_items']:,} items, "
                  f"{d['num_classes']} classes, protocol {d['protocol']}, features {d.get('features', '-')}")
        for s in d["splits"]:
            out.print(f"        {s['name']}: train {s['train']:,} / valid {s['valid']:,} / test {s['test']:,}")
        if d["missing"]:
            out.print(f"        [red]{len(d['missing'])} missing files[/red], first: {d['missing'][0]}")
    if report.get("device"):
        out.print(f"device  {report['device']} ({report['precision']})")
    if not report["problems"]:  # problems: the error line names each, once (stderr, exit 2)
        out.print("[green]ok[/green]")


recipes_app = typer.Typer(help="The bundled recipes.", no_args_is_help=True)


@recipes_app.command("ls")
def recipes_ls(
    words: Optional[List[str]] = typer.Argument(None, metavar="[FILTER]...",
                                                help="Only recipes whose name, description, paper or dataset contain "
                                                     "every word: 'gsc', 'lora esc50', '004'."),
    by: str = typer.Option("paper", "--by", help="Group by paper, dataset, or none (one flat list)."),
    as_json: bool = option("json", False),
):
    """List the bundled recipes, grouped by paper (or dataset), filtered by words."""
    from surgeon.errors import SurgeonError
    from surgeon.recipes.bundled import catalogue, matching

    if by not in ("paper", "dataset", "none"):
        raise SurgeonError(f"--by: expected paper, dataset or none, got {by!r}")
    rows = matching(catalogue(), words or [])
    if as_json:
        print_json(rows)
        return
    if not rows:
        raise SurgeonError(f"recipes ls: no bundled recipe matches {' '.join(words or [])!r}")
    from rich.table import Table

    out = console()
    groups: dict = {}
    for r in rows:
        key = None if by == "none" else r[by]
        groups.setdefault(key, []).append(r)
    for key in sorted(groups, key=lambda k: (k is None, str(k))):
        if by != "none":
            out.print(f"[bold]{'paper ' + key if by == 'paper' and key else key or 'other'}[/bold] "
                      f"({len(groups[key])})")
        table = Table("recipe", "description", box=None, header_style="bold")
        for r in groups[key]:
            table.add_row(r["name"], r["description"])
        out.print(table)


@recipes_app.command("show")
def recipes_show(name: str = typer.Argument(..., help="Bundled recipe name.")):
    """Print a bundled recipe (what 'recipes cp NAME FILE' would write)."""
    from surgeon.recipes.bundled import recipe_text

    sys.stdout.write(recipe_text(name))


@recipes_app.command("cp")
def recipes_cp(
    name: str = typer.Argument(..., help="Bundled recipe name."),
    dest: str = typer.Argument(..., help="File or folder to copy it to."),
    force: bool = option("force", False, more="(the file)."),
    as_json: bool = option("json", False),
):
    """Copy a bundled recipe to edit it ('-' as DEST: print it)."""
    from surgeon.recipes.bundled import copy, recipe_text

    if dest == "-":
        sys.stdout.write(recipe_text(name))
        return
    path = copy(name, dest, force=force)
    if as_json:
        print_json({"name": name, "out": str(path)})
        return
    print(f"copied {name} to {path}")
