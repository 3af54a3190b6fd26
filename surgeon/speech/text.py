"""Character vocabularies of CTC speech recognisers, and transcripts normalised to fit them.

A HuBERT / wav2vec 2.0 ``...ForCTC`` checkpoint predicts one character per frame from the vocabulary
in its ``vocab.json`` (written by ``Wav2Vec2CTCTokenizer``): special tokens ``<pad>`` (the CTC blank,
also ``config.pad_token_id``), ``<s>``, ``</s>``, ``<unk>``, the word delimiter ``|`` standing for a
space, and the characters, upper-case letters and the apostrophe for the LibriSpeech checkpoints the
MAM paper uses (facebook/hubert-large-ls960-ft). Special tokens never appear in decoded text.

Normalisation is a named choice (`NORMALIZATIONS`); references and hypotheses both go through the
same one before WER and CER, and CTC training targets always use "vocab":

  vocab    the vocabulary's own spelling (the default): its letter case; the apostrophe, the hyphen
           and digits kept where the vocabulary has them, else apostrophes dropped, hyphens made
           spaces and numbers spelt out
  plain    lower-case words without apostrophes, as paper 003 Table 4 prints them ("oswalds"):
           apostrophes dropped, hyphens made spaces, numbers spelt out
  literal  lower case; digits, word-internal hyphens and apostrophes kept

Every choice, in this order: Unicode compatibility form with accents removed; numbers spelt out
(`spell_numbers`) unless digits are kept; "%", "&", "+", "=" and "@" written as words; an
apostrophe (straight, curly or backtick) between two letters or digits is an apostrophe ("don't"),
kept or dropped as the choice says, any other (a quote mark) is punctuation; a hyphen between two
letters or digits is made a space, joined or kept; the letter case; all other punctuation becomes a
space; runs of spaces collapse. Letters, digits and symbols are never dropped: a character the
vocabulary cannot spell ("$" without an amount, a Greek letter) stays in the reference, where it
counts as an error, is encoded as ``<unk>`` in training targets, and is listed by `unspellable`.

`Vocab.from_model_dir(dir)` reads ``vocab.json`` (and the special-token names from
``tokenizer_config.json`` / ``special_tokens_map.json`` when present). A model without tokenizer
files (a tiny model built from a config) gets one with `write_vocab(dir, LIBRISPEECH_CHARS)`.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from surgeon.errors import SurgeonError

# the 32-entry vocabulary of facebook/wav2vec2-base-960h and facebook/hubert-large-ls960-ft, in id order
LIBRISPEECH_CHARS = (
    "<pad>", "<s>", "</s>", "<unk>", "|",
    "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V",
    "K", "'", "X", "J", "Q", "Z",
)
_SPECIAL_DEFAULTS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
                     "word_delimiter_token": "|"}


# -- normalisation choices ------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalization:
    """One named way of writing a transcript for scoring. Each field is a choice; "vocab" means
    "as the CTC vocabulary spells it" and is resolved against a vocabulary (`resolved`)."""

    name: str
    case: str  # "vocab" | "lower" | "upper"
    apostrophes: str  # "vocab" | "keep" | "drop"
    hyphens: str  # "vocab" | "keep" | "space" | "join"
    digits: str  # "vocab" | "keep" | "spell"
    summary: str = ""

    def resolved(self, vocab: "Vocab | None") -> "Normalization":
        """The same choice with every "vocab" replaced by what `vocab` can spell."""
        fields = ("case", "apostrophes", "hyphens", "digits")
        if all(getattr(self, f) != "vocab" for f in fields):
            return self
        if vocab is None:
            raise SurgeonError(f"normalisation {self.name!r} follows a CTC vocabulary; none was given")
        chars = vocab.chars
        return replace(
            self,
            case=("upper" if vocab.upper else "lower") if self.case == "vocab" else self.case,
            apostrophes=("keep" if "'" in chars else "drop") if self.apostrophes == "vocab" else self.apostrophes,
            hyphens=("keep" if "-" in chars else "space") if self.hyphens == "vocab" else self.hyphens,
            digits=("keep" if set("0123456789") <= chars else "spell") if self.digits == "vocab" else self.digits,
        )

    def describe(self) -> dict:
        return {"name": self.name, "case": self.case, "apostrophes": self.apostrophes, "hyphens": self.hyphens,
                "digits": self.digits, "summary": self.summary}


NORMALIZATIONS = {n.name: n for n in (
    Normalization("vocab", "vocab", "vocab", "vocab", "vocab",
                  "the CTC vocabulary's spelling: its case; apostrophes, hyphens and digits where it has them "
                  "(else apostrophes dropped, hyphens made spaces, numbers spelt out)"),
    Normalization("plain", "lower", "drop", "space", "spell",
                  "lower-case words without apostrophes, hyphens made spaces, numbers spelt out (paper 003 Table 4)"),
    Normalization("literal", "lower", "keep", "keep", "keep",
                  "lower case; digits, word-internal hyphens and apostrophes kept"),
)}
DEFAULT_NORMALIZATION = "vocab"


def normalization(choice) -> Normalization:
    """A Normalization from its name (or itself, or the dict `describe` wrote)."""
    if isinstance(choice, Normalization):
        return choice
    if isinstance(choice, dict):
        return Normalization(**{k: choice[k] for k in ("name", "case", "apostrophes", "hyphens", "digits")},
                             summary=choice.get("summary", ""))
    if choice not in NORMALIZATIONS:
        from surgeon.errors import did_you_mean

        hint = did_you_mean(str(choice), NORMALIZATIONS) or f" (known: {', '.join(NORMALIZATIONS)})"
        raise SurgeonError(f"normalisation: unknown choice {choice!r}{hint}")
    return NORMALIZATIONS[choice]


_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u201c": '"', "\u201d": '"'})
_SYMBOL_WORDS = {"%": " percent ", "&": " and ", "+": " plus ", "=": " equals ", "@": " at "}
_ALNUM = r"[^\W_]"
_INNER_APOSTROPHE = re.compile(rf"(?<={_ALNUM})'(?={_ALNUM})")
_INNER_HYPHEN = re.compile(rf"(?<={_ALNUM})[-\u2010\u2011](?={_ALNUM})")
_INNER_NUMBER_MARK = re.compile(r"(?<=\d)[.,](?=\d)")  # 3.14, 1,000: kept with the digits
# private-use stand-ins for the punctuation that is kept, so that the punctuation pass passes them by
_KEPT = {"'": "\ue000", "-": "\ue001", ".": "\ue002", ",": "\ue003"}


def normalize(text: str, choice="vocab", vocab: "Vocab | None" = None) -> str:
    """`text` written as the named normalisation says (see the module docstring)."""
    rule = normalization(choice).resolved(vocab)
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).translate(_QUOTES)
    if rule.digits == "spell":
        text = spell_numbers(text)
    else:
        text = _INNER_NUMBER_MARK.sub(lambda m: _KEPT[m[0]], text)
    text = "".join(_SYMBOL_WORDS.get(ch, ch) for ch in text)
    text = _INNER_APOSTROPHE.sub(_KEPT["'"] if rule.apostrophes == "keep" else "", text)
    text = _INNER_HYPHEN.sub({"keep": _KEPT["-"], "join": "", "space": " "}[rule.hyphens], text)
    text = text.upper() if rule.case == "upper" else text.lower()
    # punctuation (quote marks and the apostrophes and hyphens not kept above included) -> space
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    for ch, mark in _KEPT.items():
        text = text.replace(mark, ch)
    return re.sub(r"\s+", " ", text).strip()


# -- numbers as words -----------------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ("", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion")
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "\u00a3": ("pound", "pounds", "penny", "pence")}
_NUMBER = re.compile(
    r"(?P<cur>[$\u00a3])?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(?P<frac>\d+))?"
    r"(?P<suffix>(?:st|nd|rd|th)(?![^\W\d_])|'?s(?![^\W\d_]))?", re.IGNORECASE)


def cardinal(n: int) -> str:
    """0 -> "zero", 123 -> "one hundred twenty three" (American style: no "and", no hyphens)."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {cardinal(rest)}" if rest else "")
    if n >= 1000 ** len(_SCALES):
        return " ".join(_ONES[int(d)] for d in str(n))
    groups = []
    scale = 0
    while n:
        n, group = divmod(n, 1000)
        if group:
            groups.append(cardinal(group) + (f" {_SCALES[scale]}" if scale else ""))
        scale += 1
    return " ".join(reversed(groups))


def ordinal(n: int) -> str:
    """1 -> "first", 22 -> "twenty second", 100 -> "one hundredth"."""
    *head, last = cardinal(n).split()
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def year(n: int) -> str:
    """A year read in pairs: 1963 -> "nineteen sixty three", 1900 -> "nineteen hundred",
    1905 -> "nineteen oh five"."""
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{cardinal(hi)} hundred"
    return f"{cardinal(hi)} " + (f"oh {_ONES[lo]}" if lo < 10 else cardinal(lo))


def _plural(words: str) -> str:
    *head, last = words.split()
    last = last[:-1] + "ies" if last.endswith("y") else last + ("es" if last.endswith(("x", "s")) else "s")
    return " ".join([*head, last])


def _number_words(m: re.Match) -> str:
    digits, frac, cur = m["int"], m["frac"], m["cur"]
    suffix = (m["suffix"] or "").lower().lstrip("'")
    plain = digits.replace(",", "")
    n = int(plain)
    if len(plain) > 1 and plain.startswith("0"):  # "007": digit by digit
        words = " ".join(_ONES[int(d)] for d in plain)
    elif suffix in ("st", "nd", "rd", "th"):
        words = ordinal(n)
    elif cur is None and frac is None and "," not in digits and 1100 <= n <= 1999:
        words = year(n)
    else:
        words = cardinal(n)
    if cur is not None:
        one, many, sub_one, sub_many = _CURRENCY[cur]
        words += " " + (one if n == 1 else many)
        if frac is not None and len(frac) == 2:
            cents = int(frac)
            return f" {words} " + (f"{cardinal(cents)} {sub_one if cents == 1 else sub_many} " if cents else "")
    if frac is not None:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    if suffix == "s":
        words = _plural(words)
    return f" {words} "


def spell_numbers(text: str) -> str:
    """Numbers in `text` written as words: cardinals (1,000 -> "one thousand"), years 1100-1999 in
    pairs (1963 -> "nineteen sixty three"), ordinals (21st -> "twenty first"), decimals (3.5 ->
    "three point five"), plurals (1960s -> "nineteen sixties"), amounts ($5 -> "five dollars", £2.50
    -> "two pounds fifty pence"), leading zeros digit by digit (007 -> "zero zero seven")."""
    return _NUMBER.sub(_number_words, text)


# -- vocabularies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]  # id -> token
    blank: int  # CTC blank = the pad token's id
    delimiter: str = "|"
    unk: int | None = None
    specials: frozenset = frozenset()  # tokens that never appear in decoded text

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_tokens(cls, tokens, *, pad="<pad>", unk="<unk>", bos="<s>", eos="</s>", delimiter="|") -> "Vocab":
        """The pad token is the CTC blank; pad, unk, bos and eos (those present) are special tokens,
        which decoding never writes."""
        tokens = tuple(tokens)
        index = {t: i for i, t in enumerate(tokens)}
        if pad not in index:
            raise SurgeonError(f"vocabulary: no pad/blank token {pad!r}")
        specials = frozenset(t for t in (pad, unk, bos, eos) if t in index)
        return cls(tokens, index[pad], delimiter, index.get(unk), specials)

    @classmethod
    def librispeech(cls) -> "Vocab":
        """The 32-token vocabulary of the LibriSpeech CTC checkpoints (LIBRISPEECH_CHARS)."""
        return cls.from_tokens(LIBRISPEECH_CHARS)

    @classmethod
    def from_model_dir(cls, path: str | os.PathLike) -> "Vocab":
        """The vocabulary of a CTC checkpoint directory (its vocab.json)."""
        path = Path(path)
        vocab_file = path / "vocab.json"
        if not vocab_file.is_file():
            raise SurgeonError(
                f"{path}: no vocab.json (a CTC model needs its tokenizer files; for a model built from a "
                "config write one with surgeon.speech.text.write_vocab)"
            )
        try:
            mapping = json.loads(vocab_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SurgeonError(f"{vocab_file}: cannot read the vocabulary ({e})") from None
        if mapping and all(isinstance(v, dict) for v in mapping.values()):  # multilingual: {lang: {...}}
            raise SurgeonError(f"{vocab_file}: multi-language vocabularies are not supported")
        ids = sorted(mapping.values())
        if ids != list(range(len(ids))):
            raise SurgeonError(f"{vocab_file}: token ids are not 0..{len(ids) - 1}")
        tokens = [None] * len(ids)
        for tok, i in mapping.items():
            tokens[i] = tok
        names = dict(_SPECIAL_DEFAULTS)
        for extra in ("special_tokens_map.json", "tokenizer_config.json"):
            f = path / extra
            if f.is_file():
                try:
                    doc = json.loads(f.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                for key in names:
                    value = doc.get(key)
                    if isinstance(value, dict):  # AddedToken serialisation
                        value = value.get("content")
                    if isinstance(value, str):
                        names[key] = value
        return cls.from_tokens(tokens, pad=names["pad_token"], unk=names["unk_token"], bos=names["bos_token"],
                               eos=names["eos_token"], delimiter=names["word_delimiter_token"])

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def upper(self) -> bool:
        """True when the vocabulary's letters are upper case (LibriSpeech checkpoints)."""
        letters = [t for t in self.tokens if len(t) == 1 and t.isalpha()]
        return sum(t.isupper() for t in letters) >= sum(t.islower() for t in letters)

    @property
    def chars(self) -> frozenset:
        """The characters it spells (single-character tokens other than the delimiter and specials)."""
        return frozenset(t for t in self.tokens if len(t) == 1 and t != self.delimiter and t not in self.specials)

    # -- text ------------------------------------------------------------------------------------
    def normalize(self, text: str, choice="vocab") -> str:
        """`text` as normalisation `choice` writes it ("vocab": as this vocabulary spells it)."""
        return normalize(text, choice, vocab=self)

    def unspellable(self, text: str) -> Counter:
        """Characters of the normalised text this vocabulary cannot spell, with their counts."""
        chars = self.chars
        return Counter(ch for ch in self.normalize(text) if ch != " " and ch not in chars)

    def encode(self, text: str) -> list[int]:
        """Label ids of a transcript: normalised ("vocab"), spaces as the word delimiter, characters
        the vocabulary cannot spell as its unknown token."""
        index = {t: i for i, t in enumerate(self.tokens)}
        delim = index.get(self.delimiter)
        out = []
        for ch in self.normalize(text):
            if ch == " ":
                if delim is not None:
                    out.append(delim)
            elif ch in index and self.tokens[index[ch]] not in self.specials:
                out.append(index[ch])
            elif self.unk is not None:
                out.append(self.unk)
            else:
                raise SurgeonError(f"transcript {text[:60]!r}: {ch!r} is not in the vocabulary, which has no "
                                   "unknown token to stand for it")
        return out

    def ids_to_text(self, ids) -> str:
        """Text of label ids (no CTC collapsing here; see decode.py): delimiter -> space, special
        tokens (blank, <s>, </s>, <unk>) left out."""
        pieces = []
        for i in ids:
            tok = self.tokens[int(i)]
            if tok == self.delimiter:
                pieces.append(" ")
            elif tok not in self.specials:
                pieces.append(tok)
        return re.sub(r"\s+", " ", "".join(pieces)).strip()


def write_vocab(path: str | os.PathLike, tokens=LIBRISPEECH_CHARS) -> Path:
    """Write vocab.json (and a matching tokenizer_config.json) into a model directory, as
    Wav2Vec2CTCTokenizer.save_pretrained would, so that the directory is a complete CTC checkpoint."""
    path = Path(path)
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, indent=2) + "\n")
    config = {**_SPECIAL_DEFAULTS, "do_lower_case": False, "tokenizer_class": "Wav2Vec2CTCTokenizer"}
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path / "vocab.json"
