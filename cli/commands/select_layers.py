"""`surgeon select-layers`: choose the layers to merge by comparing layer outputs on paired data."""
from __future__ import annotations

from typing import Optional

import typer

from surgeon_cli.options import option

from surgeon.speech.select_layers import DEFAULT_PROJECTIONS  # a light module: no torch at start-up
from surgeon_cli.render import console, print_json


def select_layers(
    source: str = typer.Option(..., "--source", help="Source model (text, e.g. BERT; image, e.g. ViT; or speech/audio)."),
    target: str = typer.Option(..., "--target", help="Target audio model (HuBERT / wav2vec 2.0 / AST / BEATs .pt)."),
    pairs: str = typer.Option(..., "--pairs", help="Manifest CSV with path,text[,split] (or an LJ Speech / VCTK directory)."),
    source_pairs: Optional[str] = typer.Option(
        None, "--source-pairs",
        help="Image source only: CSV with a `path` column of images (relative to the CSV); row i goes with pair i of --pairs."),
    metric: str = typer.Option("swd", "--metric", help="swd, euclidean or inner."),
    top_k: int = typer.Option(6, "--top-k", help="How many layers to choose."),
    at: str = typer.Option(
        "attention", "--at",
        help="attention: the state between each layer's attention and feed-forward sub-layers (the paper's "
             "'output of each attention block'); layer: each layer's output."),
    split: str = typer.Option(
        "train", "--split",
        help="Pairs of this split only: train, valid, test (a manifest's split column, else surgeon's fixed hash "
             "split, as in training) or all."),
    fraction: float = typer.Option(
        1.0, "--fraction", help="A seeded random sample of this share of the split (the paper: 0.1)."),
    limit: Optional[int] = typer.Option(
        None, "--limit", help="Then only the first N of those pairs, in file order."),
    projections: int = typer.Option(
        DEFAULT_PROJECTIONS, "--projections", help="Random directions of the sliced Wasserstein distance."),
    seed: int = option("seed", 0, more="Of the random directions and of the --fraction sample."),
    batch_size: int = typer.Option(8, "--batch-size", help="Pairs per forward pass."),
    out: str = option("out", ..., more="The selection.json to write (a bar chart PNG goes beside it)."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Where to write the bar chart (default: OUT with .png)."),
    force: bool = option("force", False, more="(outputs: selection.json and its chart)."),
    as_json: bool = option("json", False, more="(the selection)."),
    allow_pickle: bool = option("allow_pickle", False, more="(the authors' BEATs .pt files)."),
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
              batch_size=batch_size, split=split, fraction=fraction, limit=limit, at=at,
              progress=sys.stderr.isatty(), source_pairs=source_pairs,
              allow_pickle=allow_pickle)
    json_path, png_path = write_selection(doc, out, plot=plot_out, force=force, inputs=inputs)
    if as_json:
        print_json(doc)
        return
    _render(doc, json_path, png_path)


def _render(doc: dict, json_path, png_path) -> None:
    from rich.table import Table

    out = console()
    better = "higher" if doc["higher_is_more_similar"] else "lower"
    d = doc["data"]
    taken = f"split {d['split']}: {d['pairs_in_split']} of {d['pairs_listed']} pairs ({d['split_from']})"
    if d["fraction"] < 1:
        taken += f", a {d['fraction']:g} sample (seed {doc['seed']})"
    if d["limit"] is not None:
        taken += f", the first {d['limit']}"
    out.print(f"pairs: {doc['num_pairs']} used; {taken}")
    out.print(f"hidden states at {doc['at']}: source {doc['taken_from']['source']}, target {doc['taken_from']['target']}")
    out.print(f"{doc['metric']} per layer over {doc['num_pairs']} pairs ({better} = more similar)")
    table = Table()
    table.add_column("layer", justify="right")
    table.add_column(doc["metric"], justify="right")
    noise = doc["swd_noise"]
    if doc["metric"] == "swd":
        table.add_column("std. error", justify="right")
    table.add_column("rank", justify="right")
    table.add_column("chosen")
    rank = {layer: r for r, layer in enumerate(doc["ranking"], 1)}
    for i, score in enumerate(doc["scores"]):
        se = [f"{noise['stderr'][i]:.2g}" if noise["stderr"][i] is not None else "-"] if doc["metric"] == "swd" else []
        table.add_row(str(i), f"{score:.6g}", *se, str(rank[i]), "yes" if i in doc["layers"] else "")
    out.print(table)
    out.print(f"layers: {','.join(map(str, doc['layers']))}")
    z = noise["boundary_z"]
    if doc["metric"] == "swd" and z is not None and z < 2:
        a, b = noise["boundary"]
        out.print(f"note: layers {a} and {b} (ranks {doc['top_k']} and {doc['top_k'] + 1}) differ by {z:.1f} standard "
                  f"errors of the SWD estimate; more --projections would tell them apart more surely")
    out.print(f"wrote {json_path} and {png_path}")
