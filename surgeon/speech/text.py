"""Character vocabularies of CTC speech recognisers, and transcripts normalised to fit them.

A HuBERT / wav2vec 2.0 ``...ForCTC`` checkpoint predicts one character per frame from the vocabulary
in its ``vocab.json`` (written by ``Wav2Vec2CTCTokenizer``): special tokens ``<pad>`` (the CTC blank,
also ``config.pad_token_id``), ``<s>``, ``</s>``, ``<unk>``, the word delimiter ``|`` standing for a
space, and the characters, upper-case letters and the apostrophe for the LibriSpeech checkpoints the
MAM paper uses (facebook/hubert-large-ls960-ft).

Normalisation (`Vocab.normalize`) turns any transcript into what such a vocabulary can spell:
Unicode compatibility form with accents removed, the vocabulary's letter case, curly quotes made
straight apostrophes, hyphens, slashes and other punctuation made spaces, characters the vocabulary
lacks dropped (digits included: use LJ Speech's normalised column, which spells numbers out), and
runs of spaces collapsed. References and hypotheses both go through it before WER and CER.

`Vocab.from_model_dir(dir)` reads ``vocab.json`` (and the special-token names from
``tokenizer_config.json`` / ``special_tokens_map.json`` when present). A model without tokenizer
files (a tiny model built from a config) gets one with `write_vocab(dir, LIBRISPEECH_CHARS)`.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass
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
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]  # id -> token
    blank: int  # CTC blank = the pad token's id
    delimiter: str = "|"
    unk: int | None = None
    specials: frozenset = frozenset()  # tokens that never appear in decoded text

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_tokens(cls, tokens, *, pad="<pad>", unk="<unk>", delimiter="|", extra_specials=()) -> "Vocab":
        tokens = tuple(tokens)
        index = {t: i for i, t in enumerate(tokens)}
        if pad not in index:
            raise SurgeonError(f"vocabulary: no pad/blank token {pad!r}")
        specials = frozenset(t for t in (pad, unk, *extra_specials) if t in index)
        return cls(tokens, index[pad], delimiter, index.get(unk), specials)

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
        return cls.from_tokens(tokens, pad=names["pad_token"], unk=names["unk_token"],
                               delimiter=names["word_delimiter_token"],
                               extra_specials=(names["bos_token"], names["eos_token"]))

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def upper(self) -> bool:
        """True when the vocabulary's letters are upper case (LibriSpeech checkpoints)."""
        letters = [t for t in self.tokens if len(t) == 1 and t.isalpha()]
        return sum(t.isupper() for t in letters) >= sum(t.islower() for t in letters)

    @property
    def _chars(self) -> frozenset:
        return frozenset(t for t in self.tokens if len(t) == 1 and t != self.delimiter and t not in self.specials)

    # -- text ------------------------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        text = unicodedata.normalize("NFKD", text or "")
        text = "".join(ch for ch in text if not unicodedata.combining(ch)).translate(_APOSTROPHES)
        text = text.upper() if self.upper else text.lower()
        chars = self._chars
        text = "".join(ch if ch in chars else (" " if not ch.isalnum() else "") for ch in text)
        return re.sub(r"\s+", " ", text).strip()

    def encode(self, text: str) -> list[int]:
        """Label ids of a transcript: normalised, spaces as the word delimiter."""
        index = {t: i for i, t in enumerate(self.tokens)}
        delim = index.get(self.delimiter)
        out = []
        for ch in self.normalize(text):
            if ch == " ":
                if delim is not None:
                    out.append(delim)
            else:
                out.append(index[ch])
        return out

    def ids_to_text(self, ids) -> str:
        """Text of label ids (no CTC collapsing here; see decode.py): delimiter -> space."""
        pieces = []
        for i in ids:
            tok = self.tokens[int(i)]
            if tok == self.delimiter:
                pieces.append(" ")
            elif int(i) != self.blank and tok not in self.specials:
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
