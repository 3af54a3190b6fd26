"""Word and character error rates with their substitution / insertion / deletion breakdown.

Both come from one Levenshtein alignment of the reference with the hypothesis (unit cost for every
edit). Corpus rates sum the edits of all utterances over the sum of reference lengths (the usual
definition; a mean of per-utterance rates would weigh short utterances up). CER counts characters
of the normalised text, spaces included, the way jiwer does. Among the minimal alignments the
backtrace prefers a match or substitution, then a deletion, then an insertion, so the S/I/D split is
deterministic.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Edits:
    hits: int = 0
    substitutions: int = 0
    insertions: int = 0
    deletions: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.insertions + self.deletions

    @property
    def ref_len(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def rate(self) -> float:
        """Errors per reference unit (can exceed 1 with many insertions); 0 for an empty pair."""
        if self.ref_len == 0:
            return float(self.insertions > 0)
        return self.errors / self.ref_len

    def __add__(self, other: "Edits") -> "Edits":
        return Edits(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def shares(self) -> dict:
        """Share of substitutions, insertions, deletions among all errors (paper 003 Table 6)."""
        n = self.errors
        return {k: (v / n if n else 0.0) for k, v in
                (("substitutions", self.substitutions), ("insertions", self.insertions),
                 ("deletions", self.deletions))}


def astuple(e: Edits) -> tuple:
    return (e.hits, e.substitutions, e.insertions, e.deletions)


def align(ref, hyp) -> Edits:
    """Levenshtein alignment of two sequences (lists of words or strings of characters)."""
    ref, hyp = list(ref), list(hyp)
    n, m = len(ref), len(hyp)
    # cost[i][j]: edits to turn ref[:i] into hyp[:j]
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0] = i
    for j in range(1, m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        row, prev, r = cost[i], cost[i - 1], ref[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (r != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
    hits = subs = ins = dels = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] == hyp[j - 1]:
                hits += 1
            else:
                subs += 1
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            dels += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return Edits(hits, subs, ins, dels)


def word_edits(ref: str, hyp: str) -> Edits:
    return align(ref.split(), hyp.split())


def char_edits(ref: str, hyp: str) -> Edits:
    return align(" ".join(ref.split()), " ".join(hyp.split()))


def wer(refs: list[str], hyps: list[str]) -> float:
    return _total(word_edits, refs, hyps).rate


def cer(refs: list[str], hyps: list[str]) -> float:
    return _total(char_edits, refs, hyps).rate


def _total(fn, refs, hyps) -> Edits:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = Edits()
    for r, h in zip(refs, hyps):
        total = total + fn(r, h)
    return total


def counts(e: Edits) -> dict:
    """The raw counts of one alignment, as stored per utterance."""
    return {"hits": e.hits, "substitutions": e.substitutions, "insertions": e.insertions, "deletions": e.deletions}


def report(keys: list[str], refs: list[str], hyps: list[str], worst: int = 10) -> dict:
    """Everything the results show: WER, CER, the S/I/D counts and shares at word and character
    level, every utterance with its reference, hypothesis and raw word and character counts (paper
    003 Tables 4 and 6 are computed from these: `surgeon compare`), and the `worst` utterances
    (highest WER, then CER)."""
    words = [word_edits(r, h) for r, h in zip(refs, hyps)]
    chars = [char_edits(r, h) for r, h in zip(refs, hyps)]
    wt, ct = sum(words, Edits()), sum(chars, Edits())
    order = sorted(range(len(refs)), key=lambda i: (-words[i].rate, -chars[i].rate, keys[i]))
    return {
        "wer": wt.rate,
        "cer": ct.rate,
        "num_utterances": len(refs),
        "word_edits": {**asdict(wt), "shares": wt.shares()},
        "char_edits": {**asdict(ct), "shares": ct.shares()},
        "worst": [
            {"key": keys[i], "wer": words[i].rate, "cer": chars[i].rate, "reference": refs[i], "hypothesis": hyps[i]}
            for i in order[:worst]
        ],
        "utterances": [
            {"key": k, "reference": r, "hypothesis": h, "words": counts(w), "chars": counts(c)}
            for k, r, h, w, c in zip(keys, refs, hyps, words, chars)
        ],
    }
