"""Vocabulary, normalisation, WER/CER with S/I/D, and greedy CTC decoding, on fixed strings."""
from __future__ import annotations

import pytest

from surgeon.errors import SurgeonError
from surgeon.speech import metrics
from surgeon.speech.decode import collapse, greedy_decode
from surgeon.speech.text import LIBRISPEECH_CHARS, NORMALIZATIONS, Vocab, normalize, spell_numbers, write_vocab

VOCAB = Vocab.librispeech()


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
    assert VOCAB.normalize("Hello, world!  It\u2019s 3 o'clock \u2014 na\u00efve-ish") == "HELLO WORLD IT'S THREE O'CLOCK NAIVE ISH"
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


# -- special tokens never leak into decoded text -----------------------------------------------------

def test_no_special_token_leaks_without_vocab_json(tmp_path):
    """A tiny CTC model without tokenizer files gets the LibriSpeech vocabulary; decoding any frame
    sequence (300 random ones over every id) writes none of <pad>, <s>, </s>, <unk>."""
    import torch

    from surgeon.speech.ctc_task import vocab_for
    from surgeon.tiny import build_tiny

    model = build_tiny("hubert", model_class="HubertForCTC")
    vocab = vocab_for(model)
    assert not (tmp_path / "vocab.json").exists() and vocab.specials == {"<pad>", "<s>", "</s>", "<unk>"}
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, len(LIBRISPEECH_CHARS), (300, 40), generator=gen)
    texts = greedy_decode(torch.nn.functional.one_hot(frames, len(LIBRISPEECH_CHARS)).float(), vocab)
    assert all(set(t) <= vocab.chars | {" "} for t in texts)
    assert not any(tok in t for t in texts for tok in ("<s>", "</s>", "<unk>", "<pad>", "|"))
    assert sum(bool(t) for t in texts) > 250  # real text came out
    bos = LIBRISPEECH_CHARS.index("<s>")
    assert vocab.ids_to_text([bos, LIBRISPEECH_CHARS.index("A"), LIBRISPEECH_CHARS.index("</s>")]) == "A"


def test_specials_named_in_tokenizer_config_are_left_out(tmp_path):
    import json

    tokens = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "|", "A", "B"]
    write_vocab(tmp_path, tokens)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]"}))
    vocab = Vocab.from_model_dir(tmp_path)
    assert vocab.blank == 0 and vocab.ids_to_text(range(len(tokens))) == "AB"


# -- normalisation choices --------------------------------------------------------------------------

SENTENCE = "\u201cIn 1963,\u201d she said, \u2018Oswald\u2019s lunch-room\u2019 had 21st-century 3.5% rates."


def test_normalisation_choices():
    assert set(NORMALIZATIONS) == {"vocab", "plain", "literal"}
    assert VOCAB.normalize(SENTENCE) == ("IN NINETEEN SIXTY THREE SHE SAID OSWALD'S LUNCH ROOM HAD TWENTY FIRST "
                                         "CENTURY THREE POINT FIVE PERCENT RATES")
    # paper 003 Table 4: lower case, no apostrophes ("oswalds")
    assert normalize(SENTENCE, "plain") == ("in nineteen sixty three she said oswalds lunch room had twenty first "
                                            "century three point five percent rates")
    assert normalize(SENTENCE, "literal") == "in 1963 she said oswald's lunch-room had 21st-century 3.5 percent rates"
    # nothing is dropped silently: a character the vocabulary cannot spell stays and is reported
    assert VOCAB.normalize("a \u03b1 b $") == "A \u0391 B $"
    assert VOCAB.unspellable("a \u03b1 b $") == {"\u0391": 1, "$": 1}
    assert VOCAB.encode("a\u03b1") == [LIBRISPEECH_CHARS.index("A"), VOCAB.unk]
    with pytest.raises(SurgeonError, match="unknown choice 'plian'.*plain"):
        normalize("x", "plian")


def test_quote_marks_are_not_apostrophes():
    assert VOCAB.normalize("'Tis the boys' 'best' don\u2019t") == "TIS THE BOYS BEST DON'T"
    assert normalize("rock 'n' roll", "literal") == "rock n roll"


def test_vocab_choice_follows_the_vocabulary():
    """"vocab" keeps what the vocabulary spells: apostrophes, hyphens, digits."""
    lower = Vocab.from_tokens(["<pad>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz"])
    assert lower.normalize("Don't stop-gap 42") == "dont stop gap forty two"
    rich = Vocab.from_tokens(["<pad>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'-0123456789"])
    assert rich.normalize("Don't stop-gap 42") == "DON'T STOP-GAP 42"
    assert NORMALIZATIONS["vocab"].resolved(rich).describe()["digits"] == "keep"


@pytest.mark.parametrize("text, words", [
    ("0", "zero"), ("7", "seven"), ("13", "thirteen"), ("40", "forty"), ("99", "ninety nine"),
    ("100", "one hundred"), ("101", "one hundred one"), ("999", "nine hundred ninety nine"),
    ("1000", "one thousand"), ("1,000,000", "one million"), ("2,500", "two thousand five hundred"),
    ("1963", "nineteen sixty three"), ("1900", "nineteen hundred"), ("1905", "nineteen oh five"),
    ("2005", "two thousand five"), ("1960s", "nineteen sixties"), ("the 80s", "the eighties"),
    ("1st", "first"), ("2nd", "second"), ("3rd", "third"), ("12th", "twelfth"), ("21st", "twenty first"),
    ("40th", "fortieth"), ("100th", "one hundredth"), ("3.14", "three point one four"), ("007", "zero zero seven"),
    ("$5", "five dollars"), ("$1", "one dollar"), ("$2.50", "two dollars fifty cents"),
    ("\u00a31.01", "one pound one penny"), ("10:30", "ten thirty"), ("a4", "a four"),
    ("12345678901234567890123", " ".join("one two three four five six seven eight nine zero".split()[int(d) - 1]
                                         if d != "0" else "zero" for d in "12345678901234567890123")),
])
def test_numbers_spelt_out(text, words):
    assert normalize(text, "plain") == words


def test_spell_numbers_leaves_other_text_alone():
    assert spell_numbers("no numbers here") == "no numbers here"
    assert " ".join(spell_numbers("in 1963 the").split()) == "in nineteen sixty three the"
