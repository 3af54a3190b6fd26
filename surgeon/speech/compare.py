"""`surgeon compare`: what changed between two evaluations of the same utterances (paper 003 section
4.3: Table 4 puts baseline and MAM transcriptions side by side, Table 6 categorises the improvements
as character insertions, substitutions and deletions).

An evaluation is anything that holds per-utterance results (`ctc_task.DETAILS_FORMAT`): the JSON of
`surgeon eval` (one cell, or `cell=` among several), a run's `details/<cell>-test.json`, or a run
directory (its details/). Utterances are matched by key; both evaluations must have scored the same
utterances against the same transcripts.

Per utterance, B *improves* on A when it has fewer word errors, or as many word errors and fewer
character errors; it is *worse* the other way round. Table 6's categories are the character edits
that turn A's hypothesis into B's, summed over the improved utterances: an insertion is a character
B adds ("rout" -> "route"), a deletion one B removes ("truley" -> "truly"), a substitution one B
replaces ("bass" -> "base"). The same is reported for the utterances B makes worse, and the S/I/D
error counts of A and B against the references.
"""
from __future__ import annotations

import json
from pathlib import Path

from surgeon.errors import SurgeonError
from surgeon.speech import metrics
from surgeon.speech.text import normalization, normalize

COMPARE_FORMAT = "surgeon-asr-compare/1"
KINDS = ("insertions", "substitutions", "deletions")


# -- reading evaluations --------------------------------------------------------------------------


def load_evaluation(path, cell: str | None = None) -> dict:
    """The per-utterance details in `path` (see the module docstring), with "source" naming where
    they came from."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _from_run(path, cell)
    if not path.is_file():
        raise SurgeonError(f"{path}: no such file or directory (expected surgeon eval's JSON, a run's "
                           "details/<cell>-test.json or a run directory)")
    doc = _read_json(path)
    if isinstance(doc, dict) and doc.get("format") == "surgeon-eval/1":
        cells = doc.get("cells") or []
        chosen = _pick(cells, cell, [c.get("name") for c in cells], path)
        if "details" not in chosen:
            raise SurgeonError(f"{path}: cell {chosen.get('name')} has no per-utterance results (not a speech "
                               "recognition evaluation, or written before surgeon kept them: evaluate again)")
        return _checked({**chosen["details"], "source": f"{path} [{chosen.get('name')}]"}, path)
    if isinstance(doc, dict) and ("utterances" in doc or "worst" in doc):
        if cell is not None:
            raise SurgeonError(f"--cell: {path} holds one cell's results; --cell is for eval JSON files and run "
                               "directories")
        return _checked({**doc, "source": str(path)}, path)
    raise SurgeonError(f"{path}: not an evaluation with per-utterance results (expected surgeon eval's JSON, a "
                       "run's details/<cell>-test.json or a run directory)")


def _from_run(run: Path, cell: str | None) -> dict:
    files = sorted((run / "details").glob("*-test.json")) if (run / "details").is_dir() else []
    if not files:
        raise SurgeonError(f"{run}: no details/<cell>-test.json (a speech recognition run of surgeon train "
                           "writes them)")
    names = [f.name[: -len("-test.json")] for f in files]
    chosen = _pick(files, cell, names, run)
    return _checked({**_read_json(chosen), "source": str(chosen)}, chosen)


def _pick(options: list, cell: str | None, names: list, where: Path):
    if cell is not None:
        for option, name in zip(options, names):
            if name == cell:
                return option
        raise SurgeonError(f"--cell {cell}: not in {where} (cells: {', '.join(map(str, names)) or 'none'})")
    if len(options) != 1:
        raise SurgeonError(f"{where}: {len(options)} cells ({', '.join(map(str, names)) or 'none'}); choose one "
                           "with --cell")
    return options[0]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SurgeonError(f"{path}: cannot read JSON ({str(e).splitlines()[0]})") from None


def _checked(details: dict, path: Path) -> dict:
    utts = details.get("utterances")
    if utts is None:
        raise SurgeonError(f"{path}: only the worst utterances are stored (written before surgeon kept every "
                           "utterance); evaluate again")
    need = ("key", "reference", "hypothesis")
    for n, u in enumerate(utts):
        if not isinstance(u, dict) or any(not isinstance(u.get(k), str) for k in need):
            raise SurgeonError(f"{path}: utterance {n} lacks one of {', '.join(need)}")
    return details


# -- comparing ------------------------------------------------------------------------------------


def _texts(details: dict, rule) -> dict[str, tuple[str, str]]:
    """key -> (reference, hypothesis): as stored, or re-normalised from the raw texts by `rule`."""
    out = {}
    for u in details["utterances"]:
        if rule is None:
            out[u["key"]] = (u["reference"], u["hypothesis"])
            continue
        if not isinstance(u.get("transcript"), str) or not isinstance(u.get("decoded"), str):
            raise SurgeonError(f"{details['source']}: utterance {u['key']} has no raw transcript and decoded text "
                               "to normalise again; compare without --normalize")
        out[u["key"]] = (normalize(u["transcript"], rule), normalize(u["decoded"], rule))
    if len(out) != len(details["utterances"]):
        raise SurgeonError(f"{details['source']}: the same utterance key appears more than once")
    return out


def _rule(a: dict, b: dict, choice: str | None):
    """None (the stored texts) or the Normalization to apply to the raw texts of both."""
    if choice is None or choice == "vocab":
        na, nb = a.get("normalization"), b.get("normalization")
        if na != nb:
            name = lambda n: n.get("name") if isinstance(n, dict) else n  # noqa: E731
            raise SurgeonError(f"{a['source']} was scored with normalisation {name(na)!r} and {b['source']} with "
                               f"{name(nb)!r}; give --normalize NAME to score both alike")
        return None
    rule = normalization(choice)
    if "vocab" in (rule.case, rule.apostrophes, rule.hyphens, rule.digits):
        raise SurgeonError(f"--normalize {choice}: follows a CTC vocabulary, which an evaluation does not store")
    return rule


def _edits_total(edits: list) -> dict:
    return metrics.counts(sum(edits, metrics.Edits()))


def _category(items: list[dict]) -> dict:
    total = {k: sum(it["edits"][k] for it in items) for k in KINDS}
    n = sum(total.values())
    return {"utterances": len(items), **total, "shares": {k: (total[k] / n if n else 0.0) for k in KINDS}}


def compare(a: dict, b: dict, normalize_as: str | None = None) -> dict:
    """The comparison document (COMPARE_FORMAT) of evaluations `a` and `b` (from load_evaluation)."""
    rule = _rule(a, b, normalize_as)
    ta, tb = _texts(a, rule), _texts(b, rule)
    only_a, only_b = [k for k in ta if k not in tb], [k for k in tb if k not in ta]
    if only_a or only_b:
        side, keys = ("A", only_a) if only_a else ("B", only_b)
        raise SurgeonError(f"the evaluations scored different utterances: {len(only_a)} only in A, {len(only_b)} "
                           f"only in B (first only in {side}: {keys[0]}); compare evaluations of the same test set")
    rows, words, chars = [], {"a": [], "b": []}, {"a": [], "b": []}
    for key, (ref, hyp_a) in ta.items():
        ref_b, hyp_b = tb[key]
        if ref_b != ref:
            raise SurgeonError(f"utterance {key}: the references differ ({ref!r} in A, {ref_b!r} in B); compare "
                               "evaluations of the same transcripts")
        wa, wb = metrics.word_edits(ref, hyp_a), metrics.word_edits(ref, hyp_b)
        ca, cb = metrics.char_edits(ref, hyp_a), metrics.char_edits(ref, hyp_b)
        words["a"].append(wa), words["b"].append(wb), chars["a"].append(ca), chars["b"].append(cb)
        if hyp_a == hyp_b:
            continue
        before, after = (wa.errors, ca.errors), (wb.errors, cb.errors)
        status = "improved" if after < before else "worse" if after > before else "same_errors"
        change = metrics.char_edits(hyp_a, hyp_b)  # the edits that turn A's hypothesis into B's
        rows.append({"key": key, "reference": ref, "a": hyp_a, "b": hyp_b, "status": status,
                     "word_errors": [wa.errors, wb.errors], "char_errors": [ca.errors, cb.errors],
                     "edits": {k: getattr(change, k) for k in KINDS}})
    rows.sort(key=lambda r: (r["word_errors"][1] - r["word_errors"][0], r["char_errors"][1] - r["char_errors"][0],
                             r["key"]))
    n = len(ta)
    changed = {s: [r for r in rows if r["status"] == s] for s in ("improved", "worse", "same_errors")}

    def side(name: str, details: dict) -> dict:
        w, c = sum(words[name], metrics.Edits()), sum(chars[name], metrics.Edits())
        return {"source": details["source"], "wer": w.rate, "cer": c.rate, "word_edits": metrics.counts(w),
                "char_edits": metrics.counts(c)}

    stored = a.get("normalization")
    return {
        "format": COMPARE_FORMAT,
        "normalization": rule.describe() if rule is not None else stored,
        "num_utterances": n,
        "a": side("a", a),
        "b": side("b", b),
        "counts": {"improved": len(changed["improved"]), "worse": len(changed["worse"]),
                   "changed_same_errors": len(changed["same_errors"]), "unchanged": n - len(rows)},
        "improvements": _category(changed["improved"]),  # paper 003 Table 6
        "regressions": _category(changed["worse"]),
        "changed": rows,
    }


# -- the picture ----------------------------------------------------------------------------------


def plot_comparison(doc: dict, path) -> None:
    """Left: word errors of A and B by type. Right: Table 6, the character edits of the improvements
    (and of the regressions) by type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(KINDS))
    for offset, name, color in ((-0.2, "a", "tab:gray"), (0.2, "b", "tab:blue")):
        left.bar(x + offset, [doc[name]["word_edits"][k] for k in KINDS], 0.4, color=color,
                 label=f"{name.upper()}: WER {100 * doc[name]['wer']:.2f}%")
    left.set_xticks(x, KINDS)
    left.set_ylabel("word errors")
    left.set_title("errors against the references")
    left.legend()
    for offset, part, color in ((-0.2, "improvements", "tab:green"), (0.2, "regressions", "tab:red")):
        cat = doc[part]
        right.bar(x + offset, [cat[k] for k in KINDS], 0.4, color=color,
                  label=f"{part} ({cat['utterances']} utterances)")
        for xi, k in zip(x, KINDS):
            if cat[k]:
                right.annotate(f"{100 * cat['shares'][k]:.1f}%", (xi + offset, cat[k]), ha="center", va="bottom",
                               fontsize=8)
    right.set_xticks(x, KINDS)
    right.set_ylabel("character edits, A's hypothesis -> B's")
    right.set_title("what changed (paper 003 Table 6)")
    right.legend()
    c = doc["counts"]
    fig.suptitle(f"B vs A on {doc['num_utterances']} utterances: {c['improved']} improved, {c['worse']} worse, "
                 f"{c['changed_same_errors']} changed with as many errors")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def write_plot(doc: dict, out, *, force: bool = False, inputs=()) -> Path:
    from surgeon.io.atomic import atomic_output

    out = Path(out)
    with atomic_output(out, force=force, inputs=inputs, directory=False) as tmp:
        plot_comparison(doc, tmp)
    return out
