"""Every model family surgeon knows, one `Family` record each, as data.

A record says, for two naming schemes, where the transformer layers are and where each *role* sits
inside a layer:

- ``disk``: the classic key names that ``save_pretrained`` writes and every Hub checkpoint carries
  (``encoder.layer.3.attention.attention.query.weight``);
- ``memory``: the module paths of the transformers-5 model in memory (``layers.3.attention.q_proj``).

and everything else that differs between families: the task model classes, the input front end, the
tiny test model, the patch grid and position table, the heads, how to detect the family from bare
keys. Roles are the same words for every family, so code that merges or injects asks for ``"q"`` or
``"ffn_norm"`` and never for a family's own names. Adding a family means adding one record here (and
its aliases in refs.py) plus its tests; docs/families.md walks through it.

Roles inside a layer:
  q, k, v, o          attention projections (Linear, weight [out, in])
  ffn_in, ffn_out     the feed-forward Linears
  attn_norm           the LayerNorm that belongs to the attention sub-layer (before it when pre-norm,
                      after it when post-norm)
  ffn_norm            likewise for the feed-forward sub-layer
  attn, ffn           (memory only) the module computing the whole sub-layer, for hooks; a sub-layer
                      without a module of its own (Whisper's fc1 -> act -> fc2) is a *span*
                      (entry module, exit module) instead
  other names         family-specific tensors that move between the schemes (BEiT's
                      ``position_bias``)

This module imports nothing heavy: `surgeon inspect` uses it without torch. Names of classes and
functions elsewhere (transformers classes, surgeon's own models) are strings, resolved when used.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Union

from surgeon.errors import SurgeonError

ATTENTION_ROLES = ("q", "k", "v", "o")
LINEAR_ROLES = ("q", "k", "v", "o", "ffn_in", "ffn_out")
NORM_ROLES = ("attn_norm", "ffn_norm")
SUBLAYER_ROLES = ("attn", "ffn")


@dataclass(frozen=True)
class Naming:
    """One naming scheme: the layer list and each role's path relative to a layer."""

    layers: str  # path of the layer list under the base model, e.g. "encoder.layer"
    roles: Mapping[str, str]
    # sub-layers without a module of their own: role -> (entry module, exit module), both under a layer
    spans: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def layer_path(self, i: int) -> str:
        return f"{self.layers}.{i}"

    def role_path(self, i: int, role: str) -> str:
        try:
            return f"{self.layers}.{i}.{self.roles[role]}"
        except KeyError:
            raise SurgeonError(f"role {role!r} is not defined in this naming scheme") from None

    def with_roles(self, **roles: str) -> "Naming":
        return Naming(self.layers, {**self.roles, **roles}, dict(self.spans))


@dataclass(frozen=True)
class Tiny:
    """The family's tiny test model: a transformers config class, the default model class and the
    overrides that make it small, or, for a model surgeon implements itself, a lazy builder
    (module, function) called as builder(model_class=..., **overrides)."""

    config: str | None
    model: str | None
    overrides: Mapping = field(default_factory=dict)
    builder: tuple[str, str] | None = None


DimKey = Union[str, Callable[[Mapping], object]]
DEFAULT_CONFIG_KEYS = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
}


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json `model_type` values
    base_prefix: str  # attribute of task models holding the base model ("bert" in BertFor...)
    disk: Naming
    memory: Naming
    modality: str  # "audio" | "speech" | "image" | "text": what the model's input is
    frontend: str  # how inputs reach it: a name in surgeon.frontends.FRONTENDS (fbank, image, waveform, ...)
    tiny: Tiny
    # task name -> transformers class (surgeon.train.tasks); a task missing here is not available
    tasks: Mapping[str, str] = field(default_factory=dict)
    # FeatureSpec settings in which the family's front end differs from the defaults (another fbank
    # normalisation, say); a recipe's data settings still win
    feature_settings: Mapping = field(default_factory=dict)
    embeddings: str = "embeddings"  # module path under the base model
    # encoder-level LayerNorm after the last layer; candidates in order, the first present counts
    # (BEiT's is the pooler's when it pools by mean)
    final_norm: str | tuple[str, ...] | None = None
    heads: tuple[str, ...] = ()  # top-level modules of task heads (outside the base model)
    label_heads: tuple[str, ...] = ()  # heads whose last Linear gives the class scores (each resized)
    frozen_frontend: tuple[str, ...] = ()  # feature encoders the papers keep frozen
    # tokens in front of the patches/frames in every layer's sequence ([CLS, DIST] in AST)
    num_special_tokens: int = 0
    # the patch grid, as config keys (size, patch, stride) for the "frequency" (height) and "time" (width)
    # axes: grid = (size - patch) // stride + 1; a size given as a pair holds (height, width);
    # None for models without a 2-D patch grid; a time axis of None follows the input's length (BEATs)
    token_grid: tuple[tuple[str, str, str], tuple[str, str, str] | None] | None = None
    # how the grid is flattened into tokens: "frequency"-major (AST, ViT-likes) or "time"-major (BEATs)
    token_order: str = "frequency"
    # (patch projection conv, position-embedding table) under the base model, for re-patching and
    # resizing; None when the positions are no fixed table (BEiT's are relative, DINOv2 interpolates
    # its table to every input)
    patch_embedding: tuple[str, str] | None = None
    # dims -> config key, or a function of the config dict (DINOv2's FFN width is hidden * mlp_ratio)
    config_keys: Mapping[str, DimKey] = field(default_factory=lambda: dict(DEFAULT_CONFIG_KEYS))
    # sub-layer order: "pre" (LN -> sub-layer -> +residual) or "post" (sub-layer -> +residual -> LN);
    # a config key name means: pre when that key is true, post otherwise
    norm_position: str = "pre"
    # whether a padded batch's attention mask is passed to the model: True, False, or (config key,
    # value): only when the config says so (wav2vec 2.0 base models were trained without a mask)
    padding_mask: bool | tuple[str, object] = False
    # what True in the mask the encoder module receives means: "keep" (a real frame, transformers'
    # attention_mask) or "pad" (a padded frame, BEATs' padding_mask); read by surgeon/methods/padding.py
    encoder_mask: str = "keep"
    # regexes that all have to match some key of a bare .safetensors file for detection;
    # the layout is already checked, these tell families with the same layout apart
    key_signature: tuple[str, ...] = ()
    # model types of other transformers models with this layout (CamemBERT's is RoBERTa's): read with
    # this record, loaded with their own classes (transformers' Auto classes for a task)
    related_types: tuple[str, ...] = ()
    # (module, function) computing the attention through its projection modules, for a family whose
    # attention reads the projection weights directly (WavLM): methods hooking the projections need it
    projection_route: tuple[str, str] | None = None
    # whether tokens can be added to the sequence (prompts): not with a relative position bias sized
    # for the patch grid (BEiT)
    extendable_sequence: bool = True
    # regexes of keys that name one tensor (the same storage) wherever they match: BEATs lists its shared
    # relative-position table under every layer; parameters count it once
    tied: tuple[str, ...] = ()
    # whether the family's published checkpoints are pickles (BEATs' .pt): offline, a pickle ref a recipe
    # allows is read as this family
    published_as_pickle: bool = False
    # depth of the published checkpoints, for an offline stand-in of one that has no alias (BEATs iter3: 12)
    published_layers: int | None = None
    # (module, function) loading a checkpoint of a family that transformers does not implement:
    # loader(path, model_class=None) -> model; None: transformers' from_pretrained
    loader: tuple[str, str] | None = None

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

    def takes_padding_mask(self, config: Mapping | None) -> bool:
        if isinstance(self.padding_mask, bool):
            return self.padding_mask
        key, value = self.padding_mask
        return (config or {}).get(key) == value

    # -- config ---------------------------------------------------------------------------------
    def dims(self, config: Mapping) -> dict:
        """num_layers, hidden_size, num_heads, intermediate_size from a config dict."""
        out = {}
        for name, key in self.config_keys.items():
            try:
                out[name] = key(config) if callable(key) else config.get(key)
            except (KeyError, TypeError, ValueError):
                out[name] = None
        return out

    def tied_repeats(self, keys: Iterable[str]) -> set[str]:
        """The keys that repeat a tied tensor already listed under an earlier key (layer 0's table)."""
        seen, repeats = set(), set()
        for k in keys:
            rx = next((rx for rx in self.tied if re.search(rx, k)), None)
            if rx in seen:
                repeats.add(k)
            elif rx is not None:
                seen.add(rx)
        return repeats

    def final_norms(self) -> tuple[str, ...]:
        if self.final_norm is None:
            return ()
        return (self.final_norm,) if isinstance(self.final_norm, str) else tuple(self.final_norm)

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
        if parsed is None or (parsed[2] in SUBLAYER_ROLES and parsed[2] not in self.naming(dst).roles):
            m = self._layer_regex(src).match(key)
            # a layer key with no role (an injected module, or a tensor of the sub-layer module that no
            # role names, such as WavLM's gated position bias): move the layer list only
            if m:
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

    def fit(self, keys: Iterable[str]) -> tuple[str, str] | None:
        """(scheme, prefix) under which these keys hold the family's whole layer layout: the weight of
        every Linear and norm role of some layer; None when they do not. Stricter than `prefix_in`,
        so that families sharing a layer list but not the layer (ViT and DINOv2) are told apart."""
        keys = keys if isinstance(keys, (set, frozenset)) else set(keys)
        for scheme in ("disk", "memory"):
            naming = self.naming(scheme)
            rx = self._layer_regex(scheme)
            needle = f"{naming.layers}."  # a substring test first: 16 families x 2 schemes of regex
            seen = set()                  # matches over a header of 700,000 names took 15 s
            for k in keys:
                if needle not in k:
                    continue
                m = rx.match(k)
                if not m or (m["prefix"], m["i"]) in seen:
                    continue
                seen.add((m["prefix"], m["i"]))
                layer = f"{m['prefix']}{naming.layers}.{m['i']}."
                if all(f"{layer}{naming.roles[r]}.weight" in keys for r in LINEAR_ROLES + NORM_ROLES):
                    return scheme, m["prefix"]
        return None

    def scheme_in(self, keys: Iterable[str]) -> str:
        """'disk' or 'memory': the naming of these keys (families whose two schemes share paths give
        'disk' for keys that fit both)."""
        found = self.fit(keys)
        return found[0] if found else "disk"


_REGEX_CACHE: dict = {}

# ------------------------------------------------------------------------------------------------
# Namings shared by several families.
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
# BERT's FFN is two modules (intermediate: dense + act, output: dense + dropout + LayerNorm)
_BERT_MEMORY = _BERT.with_roles(attn="attention", ffn="intermediate")
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
_SPEECH_MEMORY = _SPEECH.with_roles(attn="attention", ffn="feed_forward")
# BEiT (and data2vec-vision) on disk: ViT's names, plus a relative position bias in every layer
_BEIT_DISK = _VIT_DISK.with_roles(position_bias="attention.attention.relative_position_bias")

_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
             max_position_embeddings=64)
_IMAGE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
              patch_size=16, num_labels=5)
# the conv front end keeps the real structure (strided convolutions) at two layers of 16 channels
_SPEECH_TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2, vocab_size=32,
)
_DISTILBERT = Naming("transformer.layer", {
    "q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin", "o": "attention.out_lin",
    "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2", "attn_norm": "sa_layer_norm", "ffn_norm": "output_layer_norm"})
# Whisper: the encoder's layers only; FFN is fc1 -> act -> fc2 straight on the layer (a span in memory)
_WHISPER = Naming("encoder.layers", {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
    "ffn_in": "fc1", "ffn_out": "fc2", "attn_norm": "self_attn_layer_norm", "ffn_norm": "final_layer_norm"})
# BEATs (the authors' own module names, the same on disk and in memory): Whisper's layer layout under
# encoder.layers; the relative-position table under every layer is one tensor (`tied`)
_BEATS = Naming("encoder.layers", {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
    "ffn_in": "fc1", "ffn_out": "fc2", "attn_norm": "self_attn_layer_norm", "ffn_norm": "final_layer_norm"})
_IMAGE_GRID = (("image_size", "patch_size", "patch_size"), ("image_size", "patch_size", "patch_size"))
_PATCHES = ("embeddings.patch_embeddings.projection", "embeddings.position_embeddings")
_CONV_FRONTEND = r"(^|\.)feature_extractor\.conv_layers\.0\.conv\.weight$"


def _speech_encoder(name: str, model_type: str, base: str, classes: str, *, signature=(), **extra) -> "Family":
    """HuBERT, wav2vec 2.0, WavLM, UniSpeech-SAT and data2vec-audio share the encoder layout and heads."""
    options = dict(
        disk=_SPEECH,
        memory=_SPEECH_MEMORY,
        modality="speech",
        frontend="waveform",
        tasks={"classification": f"{classes}ForSequenceClassification", "ctc": f"{classes}ForCTC"},
        final_norm="encoder.layer_norm",
        heads=("lm_head", "classifier", "projector"),
        label_heads=("classifier", "lm_head"),
        frozen_frontend=("feature_extractor",),
        norm_position="do_stable_layer_norm",
        padding_mask=("feat_extract_norm", "layer"),
        key_signature=(_CONV_FRONTEND, *signature),
    )
    options.update(extra)
    options.setdefault("tiny", Tiny(f"{classes}Config", f"{classes}ForCTC", _SPEECH_TINY))
    return Family(name=name, model_types=(model_type,), base_prefix=base, **options)


# ------------------------------------------------------------------------------------------------
# The table.
# ------------------------------------------------------------------------------------------------

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # -- audio ---------------------------------------------------------------------------------
        Family(
            name="ast",
            model_types=("audio-spectrogram-transformer",),
            base_prefix="audio_spectrogram_transformer",
            disk=_VIT_DISK,
            memory=_VIT_MEMORY,
            modality="audio",
            frontend="fbank",
            tiny=Tiny("ASTConfig", "ASTForAudioClassification", dict(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_length=100, num_mel_bins=128, num_labels=5)),
            tasks={"classification": "ASTForAudioClassification"},
            final_norm="layernorm",
            heads=("classifier",),
            label_heads=("classifier",),
            num_special_tokens=2,
            token_grid=(("num_mel_bins", "patch_size", "frequency_stride"), ("max_length", "patch_size", "time_stride")),
            patch_embedding=_PATCHES,
            key_signature=(r"(^|\.)embeddings\.cls_token$", r"(^|\.)embeddings\.distillation_token$"),
        ),
        # -- images --------------------------------------------------------------------------------
        Family(
            name="vit",
            model_types=("vit",),
            base_prefix="vit",
            disk=_VIT_DISK,
            memory=_VIT_MEMORY,
            modality="image",
            frontend="image",
            tiny=Tiny("ViTConfig", "ViTForImageClassification", _IMAGE),
            tasks={"classification": "ViTForImageClassification"},
            final_norm="layernorm",
            heads=("classifier", "pooler"),
            label_heads=("classifier",),
            num_special_tokens=1,
            token_grid=_IMAGE_GRID,
            patch_embedding=_PATCHES,
            key_signature=(r"(^|\.)embeddings\.cls_token$",),
        ),
        Family(
            name="deit",
            model_types=("deit",),
            base_prefix="deit",
            disk=_VIT_DISK,
            memory=_VIT_MEMORY,
            modality="image",
            frontend="image",
            # the distilled checkpoints: a class head and a distillation head, averaged
            tiny=Tiny("DeiTConfig", "DeiTForImageClassificationWithTeacher", _IMAGE),
            tasks={"classification": "DeiTForImageClassification"},
            final_norm="layernorm",
            heads=("classifier", "cls_classifier", "distillation_classifier"),
            label_heads=("classifier", "cls_classifier", "distillation_classifier"),
            num_special_tokens=2,
            token_grid=_IMAGE_GRID,
            patch_embedding=_PATCHES,
            key_signature=(r"(^|\.)embeddings\.cls_token$", r"(^|\.)embeddings\.distillation_token$"),
        ),
        Family(
            name="beit",
            model_types=("beit",),
            base_prefix="beit",
            disk=_BEIT_DISK,  # k has no bias
            memory=_VIT_MEMORY.with_roles(position_bias="relative_position_bias"),
            modality="image",
            frontend="image",
            tiny=Tiny("BeitConfig", "BeitForImageClassification", dict(
                _IMAGE, use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.1,
                drop_path_rate=0.0)),  # no stochastic depth: a tiny model's training step is deterministic
            tasks={"classification": "BeitForImageClassification"},
            final_norm=("pooler.layernorm", "layernorm"),
            heads=("classifier", "lm_head"),
            label_heads=("classifier",),
            num_special_tokens=1,
            token_grid=_IMAGE_GRID,
            key_signature=(r"(^|\.)embeddings\.cls_token$", r"(^|\.)lambda_1$"),
            extendable_sequence=False,
        ),
        Family(
            name="data2vec-vision",
            model_types=("data2vec-vision",),
            base_prefix="data2vec_vision",
            disk=_BEIT_DISK,  # BEiT's layout; transformers 5 still runs the classic modules
            # the FFN is two modules, intermediate (dense + act) and output (dense + dropout): a span
            memory=Naming(_BEIT_DISK.layers, {**_BEIT_DISK.roles, "attn": "attention"},
                          {"ffn": ("intermediate", "output")}),
            modality="image",
            frontend="image",
            tiny=Tiny("Data2VecVisionConfig", "Data2VecVisionForImageClassification", dict(
                _IMAGE, use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.1,
                drop_path_rate=0.0)),  # no stochastic depth: a tiny model's training step is deterministic
            tasks={"classification": "Data2VecVisionForImageClassification"},
            final_norm=("pooler.layernorm", "layernorm"),
            heads=("classifier",),
            label_heads=("classifier",),
            num_special_tokens=1,
            token_grid=_IMAGE_GRID,
            key_signature=(r"(^|\.)embeddings\.cls_token$", r"(^|\.)lambda_1$"),
            extendable_sequence=False,
        ),
        Family(
            name="dinov2",
            model_types=("dinov2",),
            base_prefix="dinov2",
            disk=Naming("encoder.layer", {
                "q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
                "o": "attention.output.dense", "ffn_in": "mlp.fc1", "ffn_out": "mlp.fc2",
                "attn_norm": "norm1", "ffn_norm": "norm2"}),
            memory=Naming("encoder.layer", {
                "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "o": "attention.o_proj",
                "ffn_in": "mlp.fc1", "ffn_out": "mlp.fc2", "attn_norm": "norm1", "ffn_norm": "norm2",
                "attn": "attention", "ffn": "mlp"}),
            modality="image",
            frontend="image",
            tiny=Tiny("Dinov2Config", "Dinov2ForImageClassification", dict(
                {k: v for k, v in _IMAGE.items() if k != "intermediate_size"}, mlp_ratio=2)),
            tasks={"classification": "Dinov2ForImageClassification"},
            final_norm="layernorm",
            heads=("classifier",),
            label_heads=("classifier",),
            num_special_tokens=1,
            token_grid=_IMAGE_GRID,
            config_keys={**DEFAULT_CONFIG_KEYS,
                         "intermediate_size": lambda c: int(c["hidden_size"] * c["mlp_ratio"])},
            key_signature=(r"(^|\.)layer_scale1\.lambda1$",),
        ),
        # -- text ----------------------------------------------------------------------------------
        Family(
            name="bert",
            model_types=("bert",),
            base_prefix="bert",
            disk=_BERT,
            memory=_BERT_MEMORY,
            modality="text",
            frontend="tokens",
            tiny=Tiny("BertConfig", "BertModel", _TEXT),
            heads=("classifier", "cls", "pooler", "qa_outputs"),
            num_special_tokens=1,
            norm_position="post",
            key_signature=(r"(^|\.)embeddings\.word_embeddings\.weight$",),
        ),
        Family(
            name="roberta",
            model_types=("roberta", "xlm-roberta"),
            related_types=("camembert",),
            base_prefix="roberta",
            disk=_BERT,
            memory=_BERT_MEMORY,
            modality="text",
            frontend="tokens",
            tiny=Tiny("RobertaConfig", "RobertaModel", dict(_TEXT, pad_token_id=1)),
            heads=("classifier", "lm_head", "qa_outputs"),
            num_special_tokens=1,
            norm_position="post",
            key_signature=(r"(^|\.)embeddings\.word_embeddings\.weight$",),
        ),
        Family(
            name="electra",
            model_types=("electra",),
            base_prefix="electra",
            disk=_BERT,
            memory=_BERT_MEMORY,
            modality="text",
            frontend="tokens",
            # the small checkpoints embed at 128 and project to the hidden size
            tiny=Tiny("ElectraConfig", "ElectraModel", dict(_TEXT, embedding_size=16)),
            heads=("classifier", "discriminator_predictions", "generator_predictions", "generator_lm_head",
                   "qa_outputs"),
            num_special_tokens=1,
            norm_position="post",
            key_signature=(r"(^|\.)embeddings\.word_embeddings\.weight$",),
        ),
        Family(
            name="distilbert",
            model_types=("distilbert",),
            base_prefix="distilbert",
            disk=_DISTILBERT,
            memory=_DISTILBERT.with_roles(attn="attention", ffn="ffn"),
            modality="text",
            frontend="tokens",
            tiny=Tiny("DistilBertConfig", "DistilBertModel", dict(
                dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=100, max_position_embeddings=64)),
            heads=("pre_classifier", "classifier", "vocab_transform", "vocab_layer_norm", "vocab_projector",
                   "qa_outputs"),
            num_special_tokens=1,
            config_keys={"num_layers": "n_layers", "hidden_size": "dim", "num_heads": "n_heads",
                         "intermediate_size": "hidden_dim"},
            norm_position="post",
            key_signature=(r"(^|\.)embeddings\.word_embeddings\.weight$",),
        ),
        # -- speech --------------------------------------------------------------------------------
        _speech_encoder("hubert", "hubert", "hubert", "Hubert"),
        _speech_encoder("wav2vec2", "wav2vec2", "wav2vec2", "Wav2Vec2",
                        tiny=Tiny("Wav2Vec2Config", "Wav2Vec2ForSequenceClassification", dict(_SPEECH_TINY, num_labels=5))),
        _speech_encoder("wavlm", "wavlm", "wavlm", "WavLM",
                        signature=(r"(^|\.)attention\.gru_rel_pos_const$",),
                        projection_route=("surgeon.methods.routes", "wavlm_attention"),
                        tiny=Tiny("WavLMConfig", "WavLMForCTC", dict(_SPEECH_TINY, num_buckets=32,
                                                                    max_bucket_distance=64))),
        _speech_encoder("unispeech-sat", "unispeech-sat", "unispeech_sat", "UniSpeechSat", related_types=("unispeech",)),
        # post-norm layers only; a LayerNorm conv front end, trained with padding masks
        _speech_encoder("data2vec-audio", "data2vec-audio", "data2vec_audio", "Data2VecAudio",
                        signature=(r"(^|\.)encoder\.pos_conv_embed\.layers\.0\.conv\.weight$",),
                        norm_position="post", padding_mask=True),
        # not in transformers: surgeon's own model (surgeon/beats), read from the authors' .pt files
        Family(
            name="beats",
            model_types=("beats",),
            base_prefix="beats",  # no task wrapper: the BEATs model is its own base
            disk=_BEATS,
            # the FFN is fc1 -> act -> fc2 on the layer, as Whisper's: a span
            memory=Naming(_BEATS.layers, {**_BEATS.roles, "attn": "self_attn"}, {"ffn": ("fc1", "fc2")}),
            modality="audio",
            frontend="waveform",  # the model computes its fbank; the mask: attention_mask, 1 = audio
            feature_settings={"normalize_waveform": False},  # BEATs scales the raw waveform itself (x 2^15)
            tiny=Tiny(None, None, {}, builder=("surgeon.beats.fixtures", "build_tiny")),
            heads=("predictor",),
            label_heads=("predictor",),
            # 128 mel bins / 16 = 8 frequency patches; time follows the input; tokens time-major
            token_grid=(("mel_bins", "input_patch_size", "input_patch_size"), None),
            token_order="time",
            config_keys={"num_layers": "encoder_layers", "hidden_size": "encoder_embed_dim",
                         "num_heads": "encoder_attention_heads", "intermediate_size": "encoder_ffn_embed_dim"},
            norm_position="layer_norm_first",  # false in every published checkpoint: post-LN
            padding_mask=True,
            encoder_mask="pad",  # BEATs' encoder takes padding_mask, True on padded tokens
            key_signature=(r"^patch_embedding\.weight$",),  # surgeon.beats.checkpoint.SIGNATURE; no prefix
            tied=(r"^encoder\.layers\.\d+\.self_attn\.relative_attention_bias\.weight$",),
            loader=("surgeon.beats.directory", "load_dir"),  # a BEATs model directory (config.json)
            published_as_pickle=True,
            published_layers=12,
            # the encoder computes the position bias and token mask for the patches before the layers
            extendable_sequence=False,
        ),
        Family(
            name="whisper",
            model_types=("whisper",),
            base_prefix="model",
            # the encoder's layers only: the decoder is never a merge target or an injection site
            disk=_WHISPER,  # k has no bias
            memory=Naming(_WHISPER.layers, {**_WHISPER.roles, "attn": "self_attn"}, {"ffn": ("fc1", "fc2")}),
            modality="speech",
            frontend="logmel",
            tiny=Tiny("WhisperConfig", "WhisperForConditionalGeneration", dict(
                d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=50,
                max_target_positions=32, vocab_size=100, pad_token_id=1, bos_token_id=2, eos_token_id=3,
                decoder_start_token_id=2, num_labels=5)),
            tasks={"classification": "WhisperForAudioClassification"},
            final_norm="encoder.layer_norm",
            heads=("proj_out", "projector", "classifier"),
            label_heads=("classifier",),
            config_keys={"num_layers": "encoder_layers", "hidden_size": "d_model",
                         "num_heads": "encoder_attention_heads", "intermediate_size": "encoder_ffn_dim"},
            key_signature=(r"(^|\.)encoder\.conv1\.weight$",),
        ),
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise SurgeonError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def family_by_type(model_type) -> Family | None:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    return None


def family_by_layout_type(model_type) -> Family | None:
    """The family whose layout a related model type is known to share (CamemBERT: RoBERTa)."""
    for fam in FAMILIES.values():
        if model_type in fam.related_types:
            return fam
    return None


def _unknown(source: str, model_type) -> SurgeonError:
    what = f"model_type={model_type!r}" if model_type else "no model_type"
    return SurgeonError(f"{source}: unknown architecture {what} and its keys follow no known layout; "
                        f"surgeon knows {', '.join(FAMILIES)}")


def family_from_config(config: Mapping, source: str = "config.json", keys: Iterable[str] | None = None) -> Family:
    """The family of a config's model_type (or of a model type known to share a family's layout, such as
    CamemBERT's); an unknown model_type whose keys (when given) follow a known layout gets that family
    (layout detection: a custom wav2vec 2.0 variant is read as wav2vec 2.0)."""
    model_type = config.get("model_type")
    fam = family_by_type(model_type) or family_by_layout_type(model_type)
    if fam is not None:
        return fam
    if keys is not None:
        try:
            return family_from_keys(keys, source)
        except SurgeonError:
            pass
    raise _unknown(source, model_type)


def family_from_keys(keys: Iterable[str], source: str = "checkpoint") -> Family:
    """Detect the family of a bare state dict from its key names.

    A family matches when the keys hold its whole layer layout and its key signature. Of several,
    the one whose base prefix names it wins ('hubert.' vs 'wav2vec2.'), then the one with the most
    specific signature (WavLM's gated position bias), then the first in the table: a bare speech
    encoder without a prefix or signature is reported as HuBERT, whose layout it has."""
    keys = set(keys)  # once, not once per family
    matches = []
    for order, fam in enumerate(FAMILIES.values()):
        found = fam.fit(keys)
        if found is None:
            continue
        if not all(any(re.search(sig, k) for k in keys) for sig in fam.key_signature):
            continue
        prefix = found[1]
        named = bool(prefix) and prefix.rstrip(".").split(".")[-1] == fam.base_prefix
        matches.append(((not named, -len(fam.key_signature), order), fam))
    if not matches:
        raise SurgeonError(f"{source}: unknown architecture (no key layout of {', '.join(FAMILIES)} matches)")
    matches.sort(key=lambda m: m[0])
    return matches[0][1]


def detect_family(config: Mapping | None = None, keys: Iterable[str] | None = None, source: str = "checkpoint") -> Family:
    if config and config.get("model_type"):
        return family_from_config(config, source, keys)
    if keys is not None:
        return family_from_keys(keys, source)
    raise SurgeonError(f"{source}: cannot tell the model family (no config.json and no tensors)")


def layout_note(family: Family, config: Mapping | None) -> str | None:
    """'layout of roberta (model_type 'camembert')' when the family was found by the keys' layout."""
    model_type = (config or {}).get("model_type")
    if model_type and model_type not in family.model_types:
        return f"layout of {family.name} (model_type {model_type!r})"
    return None
