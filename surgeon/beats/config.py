"""The BEATs configuration: the `cfg` dict of an authors' checkpoint, checked, or inferred from its keys.

A checkpoint's `cfg` fills the fields it names; a field it leaves out takes the authors' class default
(as their code does: note max_distance 1280 there, 800 in every published checkpoint). A state dict
without `cfg` gets every dimension from its tensor shapes, and the fields no shape tells (deep_norm,
max_distance, post-LN...) take the published checkpoints' values. The original `cfg` dict is kept as
it was, unknown fields included, so saving writes it back unchanged.

No torch here: `surgeon inspect` can read a configuration without it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Mapping

from surgeon.errors import SurgeonError, did_you_mean

MODEL_TYPE = "beats"
MEL_BINS = 128  # the fbank's height: the patch size has to divide it

# what the FFN may use between fc1 and fc2 (the authors' table, without "glu": that one changes fc1's keys)
ACTIVATIONS = ("gelu", "gelu_accurate", "gelu_fast", "relu", "tanh", "linear")

# fields no tensor shape tells, for a state dict without cfg: the published checkpoints' values
PUBLISHED = dict(
    layer_norm_first=False, deep_norm=True, max_distance=800, activation_fn="gelu",
    layer_wise_gradient_decay_ratio=1.0,
)


@dataclass
class BEATsConfig:
    # defaults: the authors' BEATsConfig
    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527
    # the cfg dict as read (None when inferred from keys): what saving writes back
    cfg: dict | None = field(default=None, repr=False, compare=False)
    # not settings (no annotation): what transformers' configs also say, for code reading them
    model_type = MODEL_TYPE
    _attn_implementation = "sdpa"  # the attention BEATs computes

    # -- reading ----------------------------------------------------------------------------------
    @classmethod
    def from_cfg(cls, cfg: Mapping, source: str = "cfg") -> "BEATsConfig":
        if not isinstance(cfg, Mapping):
            raise SurgeonError(f"{source}: cfg is a {type(cfg).__name__}, not a dict of BEATs settings")
        known = {f.name for f in _settings()}
        values = {k: v for k, v in cfg.items() if k in known}
        config = cls(**values, cfg=dict(cfg))
        config.validate(source)
        return config

    @classmethod
    def infer(cls, shapes: Mapping[str, tuple], source: str = "checkpoint") -> "BEATsConfig":
        """The configuration a state dict's shapes tell ({key: shape}); see PUBLISHED for the rest."""
        def shape(key):
            if key not in shapes:
                raise SurgeonError(f"{source}: no cfg and no {key!r}, so its dimensions cannot be inferred")
            return tuple(shapes[key])

        layer = re.compile(r"^encoder\.layers\.(\d+)\.")
        layers = {int(m[1]) for m in map(layer.match, shapes) if m}
        if not layers:
            raise SurgeonError(f"{source}: no encoder.layers.N keys, so not a BEATs state dict")
        a = "encoder.layers.0.self_attn."
        dim = shape(a + "q_proj.weight")[0]
        patch = shape("patch_embedding.weight")
        pos = shape("encoder.pos_conv.0.weight_v")
        table = shapes.get(a + "relative_attention_bias.weight")
        if a + "grep_a" in shapes:
            heads = shape(a + "grep_a")[1]
        elif table is not None:
            heads = tuple(table)[1]
        else:
            raise SurgeonError(f"{source}: no cfg, and neither grep_a nor relative_attention_bias tells the "
                               "number of attention heads")
        values = dict(
            PUBLISHED,
            input_patch_size=patch[-1], embed_dim=patch[0], conv_bias="patch_embedding.bias" in shapes,
            encoder_layers=max(layers) + 1, encoder_embed_dim=dim,
            encoder_ffn_embed_dim=shape("encoder.layers.0.fc1.weight")[0], encoder_attention_heads=heads,
            conv_pos=pos[2], conv_pos_groups=dim // pos[1],
            relative_position_embedding=table is not None, gru_rel_pos=a + "grep_a" in shapes,
            finetuned_model="predictor.weight" in shapes,
        )
        if table is not None:
            values["num_buckets"] = tuple(table)[0]
        if "predictor.weight" in shapes:
            values["predictor_class"] = shape("predictor.weight")[0]
        config = cls(**values)
        config.validate(source)
        return config

    # -- checking ---------------------------------------------------------------------------------
    def validate(self, source: str = "cfg") -> None:
        """One-line SurgeonErrors for settings the model cannot be built from."""
        for f in _settings():
            value = getattr(self, f.name)
            kind = _KINDS[f.type]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise SurgeonError(f"{source}: cfg.{f.name} must be {_KIND_WORDS[kind]}, got {value!r}")
        positive = ("embed_dim", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                    "encoder_attention_heads", "conv_pos", "conv_pos_groups", "num_buckets", "max_distance",
                    "predictor_class")
        for name in positive:
            if getattr(self, name) < 1:
                raise SurgeonError(f"{source}: cfg.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "dropout_input",
                     "predictor_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise SurgeonError(f"{source}: cfg.{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.layer_wise_gradient_decay_ratio > 0:
            raise SurgeonError(f"{source}: cfg.layer_wise_gradient_decay_ratio must be positive, "
                               f"got {self.layer_wise_gradient_decay_ratio}")
        p = self.input_patch_size
        if p < 1 or MEL_BINS % p:
            raise SurgeonError(f"{source}: cfg.input_patch_size must divide the {MEL_BINS} mel bins, got {p}")
        d = self.encoder_embed_dim
        if d % self.encoder_attention_heads:
            raise SurgeonError(f"{source}: cfg.encoder_embed_dim {d} is not divisible by "
                               f"encoder_attention_heads {self.encoder_attention_heads}")
        if d % self.conv_pos_groups:
            raise SurgeonError(f"{source}: cfg.encoder_embed_dim {d} is not divisible by "
                               f"conv_pos_groups {self.conv_pos_groups}")
        if self.activation_fn not in ACTIVATIONS:
            raise SurgeonError(f"{source}: cfg.activation_fn {self.activation_fn!r} is not supported; "
                               f"known: {', '.join(ACTIVATIONS)}{did_you_mean(self.activation_fn, ACTIVATIONS)}")
        if self.deep_norm and self.layer_norm_first:
            raise SurgeonError(f"{source}: cfg sets both deep_norm and layer_norm_first; deep norm is for post-LN")
        if self.relative_position_embedding and self.max_distance <= self.num_buckets // 4:
            raise SurgeonError(f"{source}: cfg.max_distance {self.max_distance} must exceed num_buckets / 4 "
                               f"({self.num_buckets // 4}), where the logarithmic buckets start")

    # -- derived ----------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads

    @property
    def deep_norm_alpha(self) -> float:
        """The residual's weight in x = LN(alpha x + f(x)): (2 N)^(1/4) under deep norm, else 1."""
        return (2 * self.encoder_layers) ** 0.25 if self.deep_norm else 1.0

    @property
    def mel_bins(self) -> int:
        """The fbank's height (the patch grid's frequency size, for the anatomy's token_grid)."""
        return MEL_BINS

    @property
    def frequency_patches(self) -> int:
        return MEL_BINS // self.input_patch_size

    def settings(self) -> dict:
        """Every setting, by the authors' field names."""
        return {f.name: getattr(self, f.name) for f in _settings()}

    def to_cfg(self) -> dict:
        """The cfg dict to save: the one read, with the settings changed since (a new predictor_class...)
        put in; every setting when it was inferred from keys."""
        if self.cfg is None:
            return self.settings()
        read = BEATsConfig.from_cfg(self.cfg).settings()
        return {**self.cfg, **{k: v for k, v in self.settings().items() if read[k] != v}}

    def to_dict(self) -> dict:
        """transformers-style: the settings and model_type, for code that reads model.config.to_dict()."""
        return {"model_type": MODEL_TYPE, **self.settings()}


def _settings():
    return [f for f in fields(BEATsConfig) if f.name != "cfg"]


_KINDS = {"int": int, "bool": bool, "float": float, "str": str}
_KIND_WORDS = {int: "an integer", bool: "true or false", float: "a number", str: "a string"}
