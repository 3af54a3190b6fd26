"""`surgeon compare`: the utterances two speech recognition evaluations transcribe differently."""
from __future__ import annotations

from typing import Optional

import typer

from surgeon_cli.options import option

from surgeon_cli.render import console, print_json

EVAL_HELP = "surgeon eval's JSON, a run's details/<cell>-test.json, or a run directory."


def compare(
    eval_a: str = typer.Argument(..., metavar="EVAL_A", help="The baseline: " + EVAL_HELP),
    eval_b: str = typer.Argument(..., metavar="EVAL_B", help="The one compared with it: " + EVAL_HELP),
    cell: Optional[str] = typer.Option(None, "--cell", help="The cell to take where an evaluation has several."),
    normalize: Optional[str] = typer.Option(
        None, "--normalize",
        help="Score both with this normalisation (plain, literal; see docs/speech.md); default: the one they used."),
    show: int = typer.Option(20, "--show", help="Changed utterances to print (--json has them all)."),
    plot: str = typer.Option("compare.png", "--plot", help="Where to write the chart."),
    force: bool = option("force", False, more="(the chart)."),
    as_json: bool = option("json", False, more="(the comparison)."),
):
    """Utterances that changed between EVAL_A and EVAL_B, and the improvements by kind of character
    edit (paper 003 Tables 4 and 6), with a chart."""
    from surgeon.errors import SurgeonError
    from surgeon.io.atomic import check_output
    from surgeon.speech.compare import compare as run, load_evaluation, write_plot

    if show < 0:
        raise SurgeonError("--show: must be 0 or more")
    check_output(plot, force=force, inputs=[eval_a, eval_b])  # fail before reading anything
    doc = run(load_evaluation(eval_a, cell), load_evaluation(eval_b, cell), normalize)
    png = write_plot(doc, plot, force=force, inputs=[eval_a, eval_b])
    if as_json:
        print_json(doc)
        return
    _render(doc, show, png)


def _render(doc: dict, show: int, png) -> None:
    from rich.table import Table

    from surgeon.speech.compare import KINDS

    out = console()
    a, b, c = doc["a"], doc["b"], doc["counts"]
    out.print(f"A: {a['source']}: WER {100 * a['wer']:.2f}%, CER {100 * a['cer']:.2f}%")
    out.print(f"B: {b['source']}: WER {100 * b['wer']:.2f}%, CER {100 * b['cer']:.2f}%")
    rel = f" ({100 * (b['wer'] - a['wer']) / a['wer']:+.2f}% relative)" if a["wer"] else ""
    out.print(f"{doc['num_utterances']} utterances (normalisation {(doc['normalization'] or {}).get('name')}): "
              f"{c['improved']} improved, {c['worse']} worse, {c['changed_same_errors']} changed with as many "
              f"errors, {c['unchanged']} unchanged; WER {100 * (b['wer'] - a['wer']):+.2f} points{rel}")
    if show and doc["changed"]:
        table = Table(title=f"changed utterances (the first {min(show, len(doc['changed']))} of "
                            f"{len(doc['changed'])}, best improvements first)")
        for col in ("key", "reference", "A", "B", "word errors A->B"):
            table.add_column(col, overflow="fold")
        for row in doc["changed"][:show]:
            table.add_row(row["key"], row["reference"], row["a"], row["b"],
                          f"{row['word_errors'][0]} -> {row['word_errors'][1]}")
        out.print(table)
    errors = Table(title="errors against the references (words)")
    errors.add_column("")
    for k in KINDS:
        errors.add_column(k, justify="right")
    for name, side in (("A", a), ("B", b)):
        errors.add_row(name, *(str(side["word_edits"][k]) for k in KINDS))
    out.print(errors)
    table6 = Table(title="character edits from A's hypothesis to B's (paper 003 Table 6)")
    table6.add_column("")
    table6.add_column("utterances", justify="right")
    for k in KINDS:
        table6.add_column(k, justify="right")
    for part in ("improvements", "regressions"):
        cat = doc[part]
        table6.add_row(part, str(cat["utterances"]),
                       *(f"{cat[k]} ({100 * cat['shares'][k]:.2f}%)" for k in KINDS))
    out.print(table6)
    out.print(f"wrote {png}")
