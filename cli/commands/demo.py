"""`surgeon demo`: the main job on the embedded default, offline.

It trains the bundled quickstart recipe (a tiny AST built from a config, a Soft-MoA adapter, the
synthetic dataset), then inspects the adapter it saved, and ends with the commands a user types
next: nothing is downloaded."""
from __future__ import annotations

import typer

from surgeon_cli.options import option

PAPER_RECIPE = "ast-soft-moa-pf-esc50"  # paper 000's Soft-MoA on ESC-50: the quickstart at full size


def demo(
    out: str = option("out", "runs/quickstart", more="The run directory (replaced if it exists)."),
    as_json: bool = option("json", False, more="(the run's results, its checkpoints' summaries, the next commands)."),
):
    """Train the quickstart recipe offline (tiny AST + Soft-MoA on synthetic sounds) and inspect the result."""
    import json
    from pathlib import Path

    from surgeon.recipes.load import load_recipe
    from surgeon_cli.commands.inspect import inspect
    from surgeon_cli.commands.train import train_here

    path = train_here(load_recipe("quickstart", []), out=out, force=True, quiet=as_json)
    checkpoints = sorted((Path(out) / "checkpoints").iterdir())
    if as_json:
        from surgeon.io.checkpoint import Checkpoint
        from surgeon.summary import summarize
        from surgeon_cli.render import print_json

        print_json({"out": str(path), "results": json.loads((Path(path) / "results.json").read_text()),
                    "checkpoints": [summarize(Checkpoint.open(str(c))) for c in checkpoints],
                    "plots": str(Path(out) / "plots"),
                    "next": [{"command": c, "why": w} for c, w in next_commands(checkpoints[0])]})
        return
    for checkpoint in checkpoints:
        print()
        inspect(str(checkpoint), as_json=False, check=False, tensors=False, allow_pickle=False)
    print(f"\nplots: {Path(out) / 'plots'}")
    print("\nnext:")
    for command, why in next_commands(checkpoints[0]):
        print(f"  {command:<58} # {why}")


def next_commands(checkpoint) -> list[tuple[str, str]]:
    """Activate the environment, inspect what was trained, train a paper's recipe."""
    import os
    import sys

    if sys.prefix != sys.base_prefix:  # running from a virtual environment (dev.sh's .venv)
        rel = os.path.relpath(sys.prefix)
        venv = sys.prefix if rel.startswith("..") else rel
        first = (f". {venv}/bin/activate", "puts `surgeon` on your PATH")
    else:
        first = ("surgeon --help", "`surgeon` is on your PATH; every command")
    return [
        first,
        (f"surgeon inspect {checkpoint}", "the adapter just trained"),
        (f"surgeon train {PAPER_RECIPE}", "a paper's recipe: AST-base, ESC-50 in $SURGEON_DATA"),
    ]
