"""`surgeon models` (the aliases of the papers' and every family's usual checkpoints) and `surgeon tiny`
(offline test models)."""
from __future__ import annotations

from typing import Optional

import typer

from surgeon_cli.options import option

from surgeon_cli.render import console, print_json


def models(as_json: bool = option("json", False)):
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
    out: str = option("out", ..., more="(save_pretrained layout)."),
    force: bool = option("force", False),
    seed: int = option("seed", 0, more="Of the random initialisation."),
    shard_size: Optional[str] = option("shard_size"),
    dtype: Optional[str] = option("dtype"),
    as_json: bool = option("json", False),
):
    """Build a tiny random model of a family from its config and save it (offline demos and tests)."""
    from surgeon.tiny import save_tiny
    from surgeon_cli.options import check_dtype, parse_size

    path = save_tiny(family, out, force=force, seed=seed, shard_size=parse_size(shard_size), dtype=check_dtype(dtype))
    from surgeon.cards import model_card, write_card

    write_card(path, model_card(f"A tiny random {family}", [f"the {family} config at tiny size, random weights "
                                                            f"(seed {seed})"], summary="For offline demos and tests."))
    if as_json:
        print_json({"family": family, "seed": seed, "out": str(path)})
        return
    print(f"wrote tiny {family} model to {path}")
