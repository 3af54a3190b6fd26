"""Model references: a local path, a Hub id found in the local Hugging Face cache, or a short alias.

Resolution reads the cache layout directly (``models--org--name/refs/main`` -> ``snapshots/<hash>``)
so it costs no import of huggingface_hub; only a cache miss with the network allowed tries a download.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from surgeon.errors import SurgeonError


@dataclass(frozen=True)
class Alias:
    name: str
    hub_id: str
    family: str
    num_layers: int  # of the checkpoint, so offline stand-ins (validate) keep its depth
    used_in: str


# The checkpoints the papers used, then the usual Hub checkpoint of every other family (and of the
# models read through a family's layout: CamemBERT as RoBERTa, UniSpeech as UniSpeech-SAT).
ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias("ast", "MIT/ast-finetuned-audioset-10-10-0.4593", "ast", 12, "PETL for AST (001, 002), Soft-MoA (000)"),
        Alias("vit", "google/vit-base-patch16-224", "vit", 12, "MAM audio event classification (003), LoAA (004)"),
        Alias("bert", "google-bert/bert-large-uncased", "bert", 24, "MAM source for speech recognition (003)"),
        Alias("hubert", "facebook/hubert-large-ls960-ft", "hubert", 24, "MAM target for speech recognition (003)"),
        Alias("wav2vec2", "facebook/wav2vec2-base", "wav2vec2", 12, "PETL ablation backbone (001)"),
        # text sources
        Alias("roberta", "FacebookAI/roberta-base", "roberta", 12, "text source"),
        Alias("xlm-roberta", "FacebookAI/xlm-roberta-base", "roberta", 12, "text source (multilingual)"),
        Alias("camembert", "almanach/camembert-base", "roberta", 12, "text source (French; RoBERTa layout)"),
        Alias("distilbert", "distilbert/distilbert-base-uncased", "distilbert", 6, "text source"),
        Alias("sbert-distilbert", "sentence-transformers/multi-qa-distilbert-cos-v1", "distilbert", 6,
              "text source (sentence-transformers)"),
        Alias("electra", "google/electra-base-discriminator", "electra", 12, "text source"),
        # image sources
        Alias("deit", "facebook/deit-base-distilled-patch16-384", "deit", 12,
              "image source; the ImageNet model AST is initialised from"),
        Alias("beit", "microsoft/beit-base-patch16-224", "beit", 12, "image source"),
        Alias("dinov2", "facebook/dinov2-base", "dinov2", 12, "image source"),
        Alias("data2vec-vision", "facebook/data2vec-vision-base-ft1k", "data2vec-vision", 12, "image source"),
        # speech targets
        Alias("wavlm", "microsoft/wavlm-base-plus", "wavlm", 12, "speech target"),
        Alias("wavlm-large", "microsoft/wavlm-large", "wavlm", 24, "speech target"),
        Alias("data2vec-audio", "facebook/data2vec-audio-base-960h", "data2vec-audio", 12, "speech target (CTC)"),
        Alias("unispeech-sat", "microsoft/unispeech-sat-base-plus", "unispeech-sat", 12, "speech target"),
        Alias("unispeech", "microsoft/unispeech-large-1500h-cv", "unispeech-sat", 24,
              "speech target (UniSpeech-SAT layout)"),
        Alias("whisper-small", "openai/whisper-small", "whisper", 12, "speech target (encoder; BERT-base width)"),
        Alias("whisper-base", "openai/whisper-base", "whisper", 6, "speech target (encoder)"),
    )
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# what a model needs from a Hub snapshot (no pickles, no TF/Flax weights)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "vocab*"]


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_snapshot(hub_id: str, revision: str = "main") -> Path | None:
    repo = hf_cache_dir() / f"models--{hub_id.replace('/', '--')}"
    ref = repo / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snap = repo / "snapshots" / commit
    return snap if snap.is_dir() else None


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "SURGEON_OFFLINE"))


def _download(hub_id: str, shown: str) -> Path:
    cache = hf_cache_dir()
    if _offline():
        raise SurgeonError(
            f"{shown}: not in the local Hugging Face cache ({cache}) and downloads are off "
            "(HF_HUB_OFFLINE); download it where the Hub is reachable or pass a local path"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, allow_patterns=HUB_PATTERNS, etag_timeout=10))
    except Exception as e:  # network errors come in many types; all mean the same here
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else e.__class__.__name__
        raise SurgeonError(
            f"{shown}: not in the local Hugging Face cache ({cache}) and the Hub is unreachable "
            f"({reason}); download it where the Hub is reachable or pass a local path"
        ) from None


def resolve(ref: str | os.PathLike) -> Path:
    """A local path for a model reference; raises SurgeonError with one line when there is none."""
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if text in ALIASES:
        hub_id = ALIASES[text].hub_id
        return cached_snapshot(hub_id) or _download(hub_id, f"{text} (alias of {hub_id})")
    # "org/name" is a Hub id unless it plainly points into a local folder that exists
    if _HUB_ID.match(text) and not path.parent.is_dir():
        return cached_snapshot(text) or _download(text, text)
    raise SurgeonError(f"{text}: no such file or directory (and not a model alias: {', '.join(ALIASES)})")
