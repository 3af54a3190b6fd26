"""Vocabulary, normalisation, WER/CER with S/I/D, and greedy CTC decoding, on fixed strings."""
from __future__ import annotations

import pytest

from surgeon.errors import SurgeonError
from surgeon.speech import metrics
from surgeon.speech.decode import collapse, greedy_decode
from surgeon.speech.text import LIBRISPEECH_CHARS, Vocab, write_vocab

VOCAB = Vocab.from_tokens(LIBRISPEECH_CHARS)


# -- WER / CER -------------------------------------------------------------------------------------

def test_wer_hand_computed():
    assert metrics.wer(["THE CAT SAT"], ["THE CAT SAT"]) == 0.0
    # CAT -> BAT substituted, the second THE deleted: 2 errors over 6 reference words
    e = metrics.word_edits("THE CAT SAT ON THE MAT", "THE BAT SAT ON MAT")
    assert (e.substitutions, e.insertions, e.deletions, e.hits) == (1, 0, 1, 4)
    assert metrics.wer(["THE CAT SAT ON THE MAT"], ["THE BAT SAT ON MAT"]) == pytest.approx(2 / 6)
    # two insertions over two words: WER 1.0
    e = metrics.word_edits("A B", "A X B C")
    assert (e.substitutions, e.insertions, e.deletions) == (0, 2, 0)
    assert e.rate == 1.0
    # corpus WER sums the edits: (1 deletion + 1 insertion) / 3 words, not the mean of 0.5 and 1.0
    assert metrics.wer(["A B", "C"], ["A", "C D"]) == pytest.approx(2 / 3)


def test_cer_hand_computed():
    assert metrics.cer(["ABC"], ["ABD"]) == pytest.approx(1 / 3)
    # HELLO WORLD (11 characters, space included) -> HELO WORLDS: one deletion, one insertion
    e = metrics.char_edits("HELLO WORLD", "HELO WORLDS")
    assert (e.substitutions, e.insertions, e.deletions) == (0, 1, 1)
    assert metrics.cer(["HELLO WORLD"], ["HELO WORLDS"]) == pytest.approx(2 / 11)
    assert metrics.cer(["AB"], [""]) == 1.0  # everything deleted
    assert metrics.cer([""], [""]) == 0.0


def test_shares_and_report():
    rep = metrics.report(["u1", "u2", "u3"], ["A B C", "D E", "F"], ["A X C", "D E", "F G H"])
    w = rep["word_edits"]
    assert (w["substitutions"], w["insertions"], w["deletions"]) == (1, 2, 0)
    assert w["shares"] == pytest.approx({"substitutions": 1 / 3, "insertions": 2 / 3, "deletions": 0.0})
    assert rep["wer"] == pytest.approx(3 / 6)
    assert [x["key"] for x in rep["worst"]] == ["u3", "u1", "u2"]  # WER 2.0, 0.33, 0
    assert rep["worst"][0] == {"key": "u3", "wer": 2.0, "cer": 4.0, "reference": "F", "hypothesis": "F G H"}


def test_alignment_is_minimal():
    # a brute-force check on short random strings: the alignment's error count is the edit distance
    import itertools
    import random

    def distance(a, b):
        prev = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            cur = [i]
            for j, y in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
            prev = cur
        return prev[-1]

    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("AB ") for _ in range(rng.randint(0, 6)))
        b = "".join(rng.choice("AB ") for _ in range(rng.randint(0, 6)))
        e = metrics.align(a, b)
        assert e.errors == distance(a, b)
        assert e.ref_len == len(a) and e.hits + e.substitutions + e.insertions == len(b)
    del itertools


# -- decoding -------------------------------------------------------------------------------------

def test_collapse_repeats_then_blanks():
    assert collapse([1, 1, 0, 1, 2, 2, 0, 0, 3], blank=0) == [1, 1, 2, 3]
    assert collapse([1, 1, 1], blank=0) == [1]  # repeats without a blank between are one label
    assert collapse([0, 0, 0], blank=0) == []
    assert collapse([], blank=0) == []


def test_greedy_decode_logits():
    import torch

    A, H, SEP, BLANK = (LIBRISPEECH_CHARS.index(t) for t in ("A", "H", "|", "<pad>"))
    frames = [[A, A, BLANK, A, SEP, SEP, H, BLANK, H, BLANK], [H, H, H, SEP, A, BLANK, BLANK, A, A, A]]
    logits = torch.nn.functional.one_hot(torch.tensor(frames), len(LIBRISPEECH_CHARS)).float()
    assert greedy_decode(logits, VOCAB) == ["AA HH", "H AA"]
    # padding frames beyond an utterance's length are ignored
    assert greedy_decode(logits, VOCAB, lengths=[4, 5]) == ["AA", "H A"]


# -- vocabulary and normalisation ------------------------------------------------------------------

def test_normalize_for_upper_case_vocab():
    assert VOCAB.normalize("Hello, world!  It\u2019s 3 o'clock \u2014 na\u00efve-ish") == "HELLO WORLD IT'S O'CLOCK NAIVE ISH"
    assert VOCAB.encode("a b") == [LIBRISPEECH_CHARS.index("A"), LIBRISPEECH_CHARS.index("|"), LIBRISPEECH_CHARS.index("B")]
    assert VOCAB.ids_to_text(VOCAB.encode(" Don't  stop ")) == "DON'T STOP"


def test_normalize_follows_a_lower_case_vocab():
    lower = Vocab.from_tokens(["<pad>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"])
    assert not lower.upper
    assert lower.normalize("The CAT's hat.") == "the cat's hat"


def test_vocab_from_model_dir_matches_transformers_tokenizer(tmp_path):
    from transformers import Wav2Vec2CTCTokenizer

    write_vocab(tmp_path)
    vocab = Vocab.from_model_dir(tmp_path)
    assert vocab.tokens == LIBRISPEECH_CHARS and vocab.blank == 0 and vocab.unk == 3
    tok = Wav2Vec2CTCTokenizer.from_pretrained(str(tmp_path))
    text = "the quick brown fox's jump"
    assert vocab.encode(text) == tok(vocab.normalize(text)).input_ids
    assert vocab.ids_to_text(vocab.encode(text)) == tok.decode(tok(vocab.normalize(text)).input_ids) == vocab.normalize(text)


def test_vocab_errors(tmp_path):
    with pytest.raises(SurgeonError, match="no vocab.json"):
        Vocab.from_model_dir(tmp_path)
    (tmp_path / "vocab.json").write_text('{"<pad>": 0, "A": 2}')
    with pytest.raises(SurgeonError, match="ids"):
        Vocab.from_model_dir(tmp_path)
