"""`surgeon export`: a trained run (or a surgery directory) as a transformers model, a surgery or a
PEFT adapter (surgeon.export)."""
from __future__ import annotations

from typing import Optional

import typer

from surgeon_cli.options import option

from surgeon_cli.render import print_json

AS_HELP = ("model: a from_pretrained directory with the method merged into the weights (LoRA folded; "
           "BitFit, full fine-tuning and the head written back); surgery: the adapter-only directory "
           "`inject` writes (surgeon.load); peft: LoRA as a PEFT adapter.")


def export(
    source: str = typer.Argument(..., metavar="RUN_OR_CHECKPOINT",
                                 help="A run directory (surgeon train), one of its checkpoints/<cell>, or a surgery "
                                      "directory (surgeon inject)."),
    legacy: Optional[str] = typer.Argument(None, hidden=True),  # `export lora MODEL --format peft`, as before
    out: str = option("out", ...),
    as_: str = typer.Option("model", "--as", help=AS_HELP),
    cell: Optional[str] = typer.Option(None, "--cell", help="The cell of a run with several (fold1-seed0, ...)."),
    format_: Optional[str] = typer.Option(None, "--format", hidden=True),
    shard_size: Optional[str] = option("shard_size", more="With --as model."),
    dtype: Optional[str] = option("dtype", more="With --as model."),
    as_json: bool = option("json", False),
    force: bool = option("force", False),
):
    """Export a trained run as a model other tools load: --as model (from_pretrained), surgery or peft."""
    from surgeon.errors import SurgeonError
    from surgeon.export import export as run_export

    if legacy is not None:
        if source != "lora":
            raise SurgeonError(f"export: one RUN_OR_CHECKPOINT, got two ({source}, {legacy})")
        if format_ not in (None, "peft"):
            raise SurgeonError(f"--format: {format_!r} is not supported; use peft")
        source, as_ = legacy, "peft"  # the older spelling of --as peft
    elif format_ is not None:
        raise SurgeonError("--format: use --as model|surgery|peft")
    from surgeon_cli.options import check_dtype, parse_size

    doc = run_export(source, out, as_=as_, cell=cell, force=force, shard_size=parse_size(shard_size),
                     dtype=check_dtype(dtype))
    if as_json:
        print_json(doc)
        return
    what = {"model": "a transformers model", "surgery": "a surgery (surgeon.load)",
            "peft": "a PEFT adapter"}[doc["as"]]
    folded = f" (LoRA folded into {len(doc['folded'])} weights)" if doc.get("folded") else ""
    print(f"exported {doc['source']} as {what}{folded} to {doc['out']}")
