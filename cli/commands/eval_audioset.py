"""`surgeon eval-audioset`: mAP of a fine-tuned BEATs checkpoint's own predictor on multi-label clips."""
from __future__ import annotations

from typing import Optional

import typer

from surgeon_cli.options import option
from surgeon_cli.render import print_json


def eval_audioset(
    model: str = typer.Argument(..., help="A fine-tuned BEATs checkpoint (the authors' .pt, or a BEATs model directory)."),
    clips: str = typer.Option(..., "--clips", help="CSV with `path` (relative to the CSV) and `labels` (AudioSet label ids, comma-separated)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Clips per forward pass (padded, with the padding mask)."),
    allow_pickle: bool = option("allow_pickle", False, more="(the authors' BEATs .pt files)."),
    out: Optional[str] = option("out", None, more="The metrics JSON to write (default: print only)."),
    force: bool = option("force", False, more="(the metrics file)."),
    as_json: bool = option("json", False, more="(the metrics)."),
):
    """AudioSet-style evaluation: sigmoid probabilities of the checkpoint's predictor, mean average precision."""
    import json

    from surgeon.api import load
    from surgeon.beats.multilabel import evaluate_multilabel
    from surgeon.errors import SurgeonError
    from surgeon.io.atomic import check_output, write_text_atomic

    if batch_size < 1:
        raise SurgeonError("--batch-size: must be at least 1")
    if out is not None:
        check_output(out, force=force, inputs=[model, clips])  # fail before the model runs
    m = load(model, allow_pickle=allow_pickle)
    if type(m).__name__ != "BEATsModel":
        raise SurgeonError(f"{model}: eval-audioset evaluates a fine-tuned BEATs checkpoint, not a {type(m).__name__}")
    doc = {"model": str(model), "clips_csv": str(clips), **evaluate_multilabel(m, clips, batch_size)}
    if out is not None:
        write_text_atomic(out, json.dumps(doc, indent=2) + "\n", force=force, inputs=[model, clips])
    if as_json:
        print_json(doc)
        return
    print(f"mAP {doc['mAP']:.4f} over {doc['classes_scored']} classes with positives "
          f"({doc['classes_without_positives']} without), {doc['clips']} clips"
          + (f"; written to {out}" if out else ""))
