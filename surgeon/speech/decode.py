"""Greedy CTC decoding: the most likely label per frame, repeats collapsed, then blanks dropped.

The order matters: "A A <blank> A" is "AA" (the blank separates two real A's) while "A A A" is "A".
Frames beyond an utterance's length (padding in a batch) are ignored.
"""
from __future__ import annotations

from surgeon.speech.text import Vocab


def collapse(ids, blank: int) -> list[int]:
    """CTC's many-to-one map on one frame sequence: merge runs of the same id, then remove blanks."""
    out, prev = [], None
    for i in ids:
        i = int(i)
        if i != prev and i != blank:
            out.append(i)
        prev = i
    return out


def greedy_decode(logits, vocab: Vocab, lengths=None) -> list[str]:
    """Texts for a batch of CTC logits [batch, frames, vocab]; lengths: valid frames per utterance."""
    best = logits.argmax(dim=-1).tolist()
    if lengths is None:
        lengths = [len(row) for row in best]
    return [vocab.ids_to_text(collapse(row[: int(n)], vocab.blank)) for row, n in zip(best, lengths)]

