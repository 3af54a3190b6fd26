"""`surgeon models` (the aliases of the papers' and every family's usual checkpoints) and `surgeon tiny`
(offline test models)."""
from __future__ import annotations

import typer

from surgeon_cli.render import console, print_json


def models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List the model aliases (family, role, layers) and whether each is in the local Hugging Face cache."""
    from surgeon.refs import ALIASES

    rows = [
        {"alias": a.name, "hub_id": a.hub_id, "family": a.family, "num_layers": a.num_layers, "used_in": a.used_in,
         "cached": _cached(a.hub_id)}
        for a in ALIASES.values()
    ]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("alias", "checkpoint", "family", "layers", "used in", "local cache", box=None, header_style="bold")
    for r in rows:
        table.add_row(r["alias"], r["hub_id"], r["family"], str(r["num_layers"]), r["used_in"],
                      r["cached"] or "[dim]not cached[/dim]")
    console().print(table)


def _cached(hub_id: str) -> str | None:
    """The local snapshot's path, or None (not an empty string) when it is not cached."""
    from surgeon.refs import cached_snapshot

    snapshot = cached_snapshot(hub_id)
    return str(snapshot) if snapshot else None


def tiny(
    family: str = typer.Argument(..., help="A model family (the `surgeon models` families: ast, hubert, whisper, ...)."),
    out: str = typer.Option(..., "--out", "-o", help="Directory to write (save_pretrained layout)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random initialisation."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Build a tiny random model of a family from its config and save it (offline demos and tests)."""
    from surgeon.tiny import save_tiny

    path = save_tiny(family, out, force=force, seed=seed)
    from surgeon.cards import model_card, write_card

    write_card(path, model_card(f"A tiny random {family}", [f"the {family} config at tiny size, random weights "
                                                            f"(seed {seed})"], summary="For offline demos and tests."))
    if as_json:
        print_json({"family": family, "seed": seed, "out": str(path)})
        return
    print(f"wrote tiny {family} model to {path}")
