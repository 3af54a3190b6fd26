"""Where things are in each model family, as data.

Every family is one `Family` entry in `FAMILIES`. An entry names, for two naming schemes, where the
transformer layers are and where each *role* sits inside a layer:

- ``disk``: the classic key names that ``save_pretrained`` writes and every Hub checkpoint carries
  (``encoder.layer.3.attention.attention.query.weight``);
- ``memory``: the module paths of the transformers-5 model in memory (``layers.3.attention.q_proj``).

Roles are the same words for every family, so code that merges or injects asks for ``"q"`` or
``"ffn_norm"`` and never for a family's own names. Adding a family (WavLM, a Whisper encoder, BEATs)
means adding an entry here and a test, nothing else.

Roles inside a layer:
  q, k, v, o          attention projections (Linear, weight [out, in])
  ffn_in, ffn_out     the feed-forward Linears
  attn_norm           the LayerNorm that belongs to the attention sub-layer (before it when pre-norm,
                      after it when post-norm)
  ffn_norm            likewise for the feed-forward sub-layer
  attn, ffn           (memory only) the module computing the whole sub-layer, for hooks

This module imports nothing heavy: `surgeon inspect` uses it without torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from surgeon.errors import SurgeonError

ATTENTION_ROLES = ("q", "k", "v", "o")
LINEAR_ROLES = ("q", "k", "v", "o", "ffn_in", "ffn_out")
NORM_ROLES = ("attn_norm", "ffn_norm")


@dataclass(frozen=True)
class Naming:
    """One naming scheme: the layer list and each role's path relative to a layer."""

    layers: str  # path of the layer list under the base model, e.g. "encoder.layer"
    roles: Mapping[str, str]

    def layer_path(self, i: int) -> str:
        return f"{self.layers}.{i}"

    def role_path(self, i: int, role: str) -> str:
        try:
            return f"{self.layers}.{i}.{self.roles[role]}"
        except KeyError:
            raise SurgeonError(f"role {role!r} is not defined in this naming scheme") from None


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json `model_type` values
    base_prefix: str  # attribute of task models holding the base model ("bert" in BertFor...)
    disk: Naming
    memory: Naming
    modality: str  # "audio" | "speech" | "image" | "text": what the model's input is
    embeddings: str = "embeddings"  # module path under the base model
    final_norm: str | None = None  # encoder-level LayerNorm after the last layer
    heads: tuple[str, ...] = ()  # top-level modules of task heads (outside the base model)
    frozen_frontend: tuple[str, ...] = ()  # feature encoders the papers keep frozen
    # tokens in front of the patches/frames in every layer's sequence ([CLS, DIST] in AST)
    num_special_tokens: int = 0
    # the patch grid, as config keys (size, patch, stride) for the "frequency" (height) and "time" (width)
    # axes: grid = (size - patch) // stride + 1; None for models without a 2-D patch grid
    token_grid: tuple[tuple[str, str, str], tuple[str, str, str]] | None = None
    # (patch projection conv, position-embedding table) under the base model, for re-patching
    patch_embedding: tuple[str, str] | None = None
    # config key names (transformers' defaults unless a family differs)
    config_keys: Mapping[str, str] = field(
        default_factory=lambda: {
            "num_layers": "num_hidden_layers",
            "hidden_size": "hidden_size",
            "num_heads": "num_attention_heads",
            "intermediate_size": "intermediate_size",
        }
    )
    # sub-layer order: "pre" (LN -> sub-layer -> +residual) or "post" (sub-layer -> +residual -> LN);
    # a config key name means: pre when that key is true, post otherwise
    norm_position: str = "pre"
    # regexes that all have to match some key of a bare .safetensors file for detection;
    # the layer path is already checked, these tell families with the same layout apart
    key_signature: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    # -- naming ---------------------------------------------------------------------------------
    def naming(self, scheme: str) -> Naming:
        if scheme not in ("disk", "memory"):
            raise ValueError(f"unknown naming scheme {scheme!r}")
        return self.disk if scheme == "disk" else self.memory

    def key(self, i: int, role: str, leaf: str = "weight", *, scheme: str = "disk", prefix: str = "") -> str:
        """Full tensor key (or module path when leaf is None) of `role` in layer i."""
        path = self.naming(scheme).role_path(i, role)
        return f"{prefix}{path}" + (f".{leaf}" if leaf else "")

    def is_pre_norm(self, config: Mapping | None) -> bool:
        if self.norm_position in ("pre", "post"):
            return self.norm_position == "pre"
        return bool((config or {}).get(self.norm_position, False))

    # -- config ---------------------------------------------------------------------------------
    def dims(self, config: Mapping) -> dict:
        """num_layers, hidden_size, num_heads, intermediate_size from a config dict."""
        return {name: config.get(key) for name, key in self.config_keys.items()}

    # -- key parsing ----------------------------------------------------------------------------
    def _layer_regex(self, scheme: str) -> re.Pattern:
        cache = _REGEX_CACHE.setdefault((self.name, scheme), {})
        if "layer" not in cache:
            layers = re.escape(self.naming(scheme).layers)
            cache["layer"] = re.compile(rf"^(?P<prefix>(?:[\w.]+\.)?){layers}\.(?P<i>\d+)\.(?P<rest>.+)$")
        return cache["layer"]

    def parse(self, key: str, scheme: str = "disk"):
        """Split a key into (prefix, layer index, role, leaf); None when it is not a layer role key.

        leaf is what follows the role's module path ("weight", "bias", or a deeper path)."""
        m = self._layer_regex(scheme).match(key)
        if not m:
            return None
        rest = m["rest"]
        # longest role path first: "attention.output.dense" must win over "attention"
        for role, path in sorted(self.naming(scheme).roles.items(), key=lambda kv: -len(kv[1])):
            if rest.startswith(path + "."):
                return m["prefix"], int(m["i"]), role, rest[len(path) + 1 :]
        return None

    def translate(self, key: str, src: str, dst: str) -> str:
        """Map a key between naming schemes; keys outside the layer roles are the same in both."""
        if src == dst:
            return key
        parsed = self.parse(key, src)
        if parsed is None:
            m = self._layer_regex(src).match(key)
            if m:  # a layer key with no role (e.g. an injected module): move the layer list only
                return f"{m['prefix']}{self.naming(dst).layers}.{m['i']}.{m['rest']}"
            return key
        prefix, i, role, leaf = parsed
        if role not in self.naming(dst).roles:
            raise SurgeonError(f"{self.name}: role {role!r} has no {dst} name (key {key})")
        return f"{prefix}{self.naming(dst).role_path(i, role)}.{leaf}"

    def num_layers_in(self, keys: Iterable[str], scheme: str = "disk") -> int:
        rx = self._layer_regex(scheme)
        found = [int(m["i"]) for m in map(rx.match, keys) if m]
        return max(found) + 1 if found else 0

    def prefix_in(self, keys: Iterable[str], scheme: str = "disk") -> str | None:
        """The text before the layer list in these keys ('' for a bare base model, 'bert.' for a task
        model); None when no key has the family's layer layout."""
        rx = self._layer_regex(scheme)
        for k in keys:
            m = rx.match(k)
            if m and self.parse(k, scheme):
                return m["prefix"]
        return None


_REGEX_CACHE: dict = {}

# ------------------------------------------------------------------------------------------------
# The table.
# ------------------------------------------------------------------------------------------------

_VIT_DISK = Naming(
    layers="encoder.layer",
    roles={
        "q": "attention.attention.query",
        "k": "attention.attention.key",
        "v": "attention.attention.value",
        "o": "attention.output.dense",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
        "attn_norm": "layernorm_before",
        "ffn_norm": "layernorm_after",
    },
)
_VIT_MEMORY = Naming(
    layers="layers",
    roles={
        "q": "attention.q_proj",
        "k": "attention.k_proj",
        "v": "attention.v_proj",
        "o": "attention.o_proj",
        "ffn_in": "mlp.fc1",
        "ffn_out": "mlp.fc2",
        "attn_norm": "layernorm_before",
        "ffn_norm": "layernorm_after",
        "attn": "attention",
        "ffn": "mlp",
    },
)
_BERT = Naming(
    layers="encoder.layer",
    roles={
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "o": "attention.output.dense",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "ffn_norm": "output.LayerNorm",
    },
)
_BERT_MEMORY = Naming(layers=_BERT.layers, roles={**_BERT.roles, "attn": "attention", "ffn": "intermediate"})
_SPEECH = Naming(
    layers="encoder.layers",
    roles={
        "q": "attention.q_proj",
        "k": "attention.k_proj",
        "v": "attention.v_proj",
        "o": "attention.out_proj",
        "ffn_in": "feed_forward.intermediate_dense",
        "ffn_out": "feed_forward.output_dense",
        "attn_norm": "layer_norm",
        "ffn_norm": "final_layer_norm",
    },
)
_SPEECH_MEMORY = Naming(layers=_SPEECH.layers, roles={**_SPEECH.roles, "attn": "attention", "ffn": "feed_forward"})

# HuBERT and wav2vec 2.0 encoders share one layout; only their names differ
_SPEECH_ENCODER = dict(
    disk=_SPEECH,
    memory=_SPEECH_MEMORY,
    modality="speech",
    final_norm="encoder.layer_norm",
    heads=("lm_head", "classifier", "projector"),
    frozen_frontend=("feature_extractor",),
    norm_position="do_stable_layer_norm",
    key_signature=(r"(^|\.)feature_extractor\.conv_layers\.0\.conv\.weight$",),
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="ast",
            model_types=("audio-spectrogram-transformer",),
            base_prefix="audio_spectrogram_transformer",
            disk=_VIT_DISK,
            memory=_VIT_MEMORY,
            modality="audio",
            final_norm="layernorm",
            heads=("classifier",),
            num_special_tokens=2,
            token_grid=(("num_mel_bins", "patch_size", "frequency_stride"), ("max_length", "patch_size", "time_stride")),
            patch_embedding=("embeddings.patch_embeddings.projection", "embeddings.position_embeddings"),
            key_signature=(r"(^|\.)embeddings\.distillation_token$",),
        ),
        Family(
            name="vit",
            model_types=("vit",),
            base_prefix="vit",
            disk=_VIT_DISK,
            memory=_VIT_MEMORY,
            modality="image",
            final_norm="layernorm",
            heads=("classifier", "pooler"),
            num_special_tokens=1,
            token_grid=(("image_size", "patch_size", "patch_size"), ("image_size", "patch_size", "patch_size")),
            patch_embedding=("embeddings.patch_embeddings.projection", "embeddings.position_embeddings"),
            key_signature=(r"(^|\.)embeddings\.cls_token$",),
        ),
        Family(
            name="bert",
            model_types=("bert",),
            base_prefix="bert",
            disk=_BERT,
            memory=_BERT_MEMORY,
            modality="text",
            heads=("classifier", "cls", "pooler", "qa_outputs"),
            num_special_tokens=1,
            norm_position="post",
            key_signature=(r"(^|\.)embeddings\.word_embeddings\.weight$",),
        ),
        Family(name="hubert", model_types=("hubert",), base_prefix="hubert", **_SPEECH_ENCODER),
        Family(name="wav2vec2", model_types=("wav2vec2",), base_prefix="wav2vec2", **_SPEECH_ENCODER),
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise SurgeonError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def family_from_config(config: Mapping, source: str = "config.json") -> Family:
    model_type = config.get("model_type")
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise SurgeonError(f"{source}: unknown architecture model_type={model_type!r}; surgeon knows {known}")


def family_from_keys(keys: Iterable[str], source: str = "checkpoint") -> Family:
    """Detect the family of a bare state dict from its key names.

    Families that share a layout are told apart by their base prefix ('hubert.' vs 'wav2vec2.') and
    then by their key signature; a bare speech encoder without a prefix is reported as the first
    matching family, since HuBERT and wav2vec 2.0 encoders are identical in layout."""
    keys = list(keys)
    matches = []
    for fam in FAMILIES.values():
        prefix = fam.prefix_in(keys, "disk")
        if prefix is None:
            prefix = fam.prefix_in(keys, "memory")
        if prefix is None:
            continue
        if not all(any(re.search(sig, k) for k in keys) for sig in fam.key_signature):
            continue
        named = prefix.rstrip(".").split(".")[-1] == fam.base_prefix if prefix else False
        matches.append((not named, fam))  # families whose prefix names them first
    if not matches:
        raise SurgeonError(f"{source}: unknown architecture (no key pattern of {', '.join(FAMILIES)} matches)")
    matches.sort(key=lambda m: m[0])
    return matches[0][1]


def detect_family(config: Mapping | None = None, keys: Iterable[str] | None = None, source: str = "checkpoint") -> Family:
    if config and config.get("model_type"):
        return family_from_config(config, source)
    if keys is not None:
        return family_from_keys(keys, source)
    raise SurgeonError(f"{source}: cannot tell the model family (no config.json and no tensors)")
