"""`surgeon demo`: the main job on the embedded default, offline.

It trains the bundled quickstart recipe (a tiny AST built from a config, a Soft-MoA adapter, the
synthetic dataset), then inspects the adapter it saved: nothing is downloaded."""
from __future__ import annotations

import typer


def demo(
    out: str = typer.Option("runs/quickstart", "--out", "-o", help="Run directory (replaced if it exists)."),
):
    """Train the quickstart recipe offline (tiny AST + Soft-MoA on synthetic sounds) and inspect the result."""
    from pathlib import Path

    from surgeon.recipes.load import load_recipe
    from surgeon_cli.commands.inspect import inspect
    from surgeon_cli.commands.train import train_here

    train_here(load_recipe("quickstart", []), out=out, force=True)
    for checkpoint in sorted((Path(out) / "checkpoints").iterdir()):
        print()
        inspect(str(checkpoint), as_json=False, check=False, tensors=False, allow_pickle=False)
    print(f"\nplots: {Path(out) / 'plots'}")
