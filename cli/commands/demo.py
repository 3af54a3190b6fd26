"""`surgeon demo`: the main job on an embedded default, offline."""
from __future__ import annotations

import typer


def demo(
    out: str = typer.Option("runs/demo", "--out", "-o", help="Where the demo writes its outputs."),
):
    """Build a tiny AST from a config, save it, and inspect it (no downloads)."""
    from pathlib import Path

    from surgeon.tiny import save_tiny
    from surgeon_cli.commands.inspect import inspect

    model = save_tiny("ast", Path(out) / "tiny-ast", force=True)
    print(f"saved a tiny AST built from ASTConfig to {model}\n")
    inspect(str(model), as_json=False, check=True, tensors=True, allow_pickle=False)
