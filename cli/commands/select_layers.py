"""`surgeon select-layers`: choose the layers to merge by comparing layer outputs on paired data."""
from __future__ import annotations

from typing import Optional

import typer

from surgeon_cli.render import console, print_json


def select_layers(
    source: str = typer.Option(..., "--source", help="Source model (text, e.g. BERT; image, e.g. ViT; or speech/audio)."),
    target: str = typer.Option(..., "--target", help="Target audio model (HuBERT / wav2vec 2.0 / AST)."),
    pairs: str = typer.Option(..., "--pairs", help="Manifest CSV with path,text (or an LJ Speech / VCTK directory)."),
    source_pairs: Optional[str] = typer.Option(
        None, "--source-pairs",
        help="Image source only: CSV with a `path` column of images (relative to the CSV); row i goes with pair i of --pairs."),
    metric: str = typer.Option("swd", "--metric", help="swd, euclidean or inner."),
    top_k: int = typer.Option(6, "--top-k", help="How many layers to choose."),
    projections: int = typer.Option(50, "--projections", help="Random directions of the sliced Wasserstein distance."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random directions."),
    batch_size: int = typer.Option(8, "--batch-size", help="Pairs per forward pass."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N pairs."),
    out: str = typer.Option(..., "--out", help="selection.json to write (a bar chart PNG goes beside it)."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Where to write the bar chart (default: OUT with .png)."),
    force: bool = typer.Option(False, "--force", help="Replace existing outputs."),
    as_json: bool = typer.Option(False, "--json", help="Print the selection as JSON instead of a table."),
):
    """Score every layer by source/target similarity on paired data and write the top-k selection."""
    import sys

    from surgeon.io.atomic import check_output
    from surgeon.speech.select_layers import METRICS, plot_path_for, select_layers as run, write_selection

    if metric not in METRICS:
        from surgeon.errors import SurgeonError

        raise SurgeonError(f"--metric: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    plot_out = plot or plot_path_for(out)
    inputs = [source, target, pairs] + ([source_pairs] if source_pairs else [])
    check_output(out, force=force, inputs=inputs)  # fail before the models run
    check_output(plot_out, force=force, inputs=inputs)
    doc = run(source, target, pairs, metric=metric, top_k=top_k, projections=projections, seed=seed,
              batch_size=batch_size, limit=limit, progress=sys.stderr.isatty(), source_pairs=source_pairs)
    json_path, png_path = write_selection(doc, out, plot=plot_out, force=force, inputs=inputs)
    if as_json:
        print_json(doc)
        return
    _render(doc, json_path, png_path)


def _render(doc: dict, json_path, png_path) -> None:
    from rich.table import Table

    out = console()
    better = "higher" if doc["higher_is_more_similar"] else "lower"
    out.print(f"{doc['metric']} per layer over {doc['num_pairs']} pairs ({better} = more similar)")
    table = Table()
    table.add_column("layer", justify="right")
    table.add_column(doc["metric"], justify="right")
    table.add_column("rank", justify="right")
    table.add_column("chosen")
    rank = {layer: r for r, layer in enumerate(doc["ranking"], 1)}
    for i, score in enumerate(doc["scores"]):
        table.add_row(str(i), f"{score:.6g}", str(rank[i]), "yes" if i in doc["layers"] else "")
    out.print(table)
    out.print(f"layers: {','.join(map(str, doc['layers']))}")
    out.print(f"wrote {json_path} and {png_path}")
