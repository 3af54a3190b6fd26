"""`surgeon inspect PATH`: what is in a checkpoint, from the safetensors headers alone."""
from __future__ import annotations

import typer

from surgeon_cli.options import option

from surgeon_cli.render import console, human_bytes, human_count, print_json


def inspect(
    path: str = typer.Argument(..., help="Model directory, .safetensors file, Hub id or alias."),
    as_json: bool = option("json", False),
    check: bool = typer.Option(False, "--check", help="Verify file integrity; exit 2 on the first problem."),
    tensors: bool = typer.Option(True, "--tensors/--no-tensors", help="List the layer-collapsed tensors."),
    allow_pickle: bool = option("allow_pickle", False),
):
    """Summarise a checkpoint: family, layers, sizes, dtypes, parameters, surgery."""
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.summary import check as run_check
    from surgeon.summary import summarize

    ckpt = Checkpoint.open(path, allow_pickle=allow_pickle)
    doc = summarize(ckpt)
    if check:
        doc["check"] = run_check(ckpt)
    if as_json:
        print_json(doc)
        return
    _render(doc, tensors)


def _surgery_counts(entry: dict) -> str:
    added, trained = entry["num_parameters"], entry.get("trained_parameters")
    if trained is None:
        return f"{added:,} params"
    if added == 0:  # BitFit, full, linear: nothing added, the model's own parameters trained
        return f"{trained:,} params trained"
    return f"{added:,} params added, {trained:,} trained"


def _render(doc: dict, show_tensors: bool) -> None:
    from rich.table import Table

    out = console()
    out.print(f"[bold]{doc['path']}[/bold]")
    info = Table.grid(padding=(0, 2))
    info.add_column(style="dim")
    info.add_column()
    rows = [
        ("format", doc["format"] + (f" ({len(doc['shards'])} shards)" if len(doc["shards"]) > 1 else "")),
        ("family", f"{doc['layout'] or doc['family']} ({doc['modality']}), {doc['key_scheme']} key names, "
                   f"prefix '{doc['prefix']}'"),
        ("architectures", ", ".join(doc["architectures"] or []) or "-"),
        ("layers", str(doc["num_layers"])),
        ("hidden / heads / ffn", f"{doc['hidden_size']} / {doc['num_heads'] or '-'} / {doc['intermediate_size']}"),
        ("parameters", f"{doc['num_parameters']:,} ({human_count(doc['num_parameters'])})"),
        ("tensors", f"{doc['num_tensors']:,}" + (f" ({doc['tied_keys']} repeat a shared tensor)" if doc["tied_keys"]
                                                  else "") + f", {human_bytes(doc['size_bytes'])} of data, "
                    f"{human_bytes(doc['file_size_bytes'])} on disk"),
    ]
    for dtype, n in doc["dtypes"].items():
        rows.append((f"  {dtype}", f"{n:,} elements in {doc['dtype_tensors'][dtype]} tensors, "
                                   f"{human_bytes(doc['dtype_bytes'][dtype])}"))
    surgery = ", ".join(f"{s['method']} ({_surgery_counts(s)})" for s in doc["surgery"]) or "none"
    rows.append(("surgery", surgery))
    for k, v in rows:
        info.add_row(k, v)
    out.print(info)
    if "check" in doc:
        for line in doc["check"]:
            out.print(f"[green]ok[/green] {line}")
    if show_tensors:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("tensor", overflow="fold")
        table.add_column("count", justify="right")
        table.add_column("shape")
        table.add_column("dtype")
        for t in doc["tensors"]:
            table.add_row(t["name"], f"x{t['count']}" if t["count"] > 1 else "", str(t["shape"]), t["dtype"])
        out.print(table)
