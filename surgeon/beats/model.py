"""The BEATs model (Chen et al. 2022, arXiv 2212.09058), written from the paper and the checkpoint layout.

    waveform [B, S] -> fbank [B, frames, 128] (frontend.py)
      -> 16x16 patch conv (stride 16: frames that do not fill a patch are dropped), tokens in time-major
         order (token = t * 8 + f), LayerNorm, post_extract_proj to the encoder width
      -> padded tokens zeroed; + GELU(weight-normed grouped conv over the tokens); LayerNorm (post-LN)
      -> N layers: x = LN(alpha x + SelfAttn(x)); x = LN(alpha x + FFN(x)), alpha = (2 N)^(1/4) under
         deep norm; one relative position bias for all layers, gated per layer (attention.py)
      -> fine-tuned checkpoints: predictor on every token, averaged over the kept tokens (logits)

Module names are the checkpoint's keys (`encoder.layers.N.self_attn.q_proj`, `fc1`, `fc2`,
`self_attn_layer_norm`, `final_layer_norm`, `encoder.pos_conv.0.weight_g`...), registered in the
authors' order, so `state_dict()` is the checkpoint's `model` dict, key for key. Tensors run
[batch, tokens, channels] everywhere (the authors' encoder runs tokens-first; the result is the same).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from surgeon.beats import frontend
from surgeon.beats.attention import SelfAttention
from surgeon.beats.config import BEATsConfig
from surgeon.errors import SurgeonError


def _gelu(x):  # the authors' FFN GELU runs in float32 whatever the model's dtype
    return F.gelu(x.float()).type_as(x)


ACTIVATION_FUNCTIONS = {
    "gelu": _gelu,
    "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": torch.tanh,
    "linear": lambda x: x,
}


@dataclass
class BEATsOutput:
    last_hidden_state: torch.Tensor  # [batch, tokens, d]: the authors' extract_features without predictor
    logits: torch.Tensor | None = None  # [batch, classes]: token-averaged predictor output, before the sigmoid
    hidden_states: tuple | None = None  # the encoder's input (after pos conv and LN), then each layer's output
    padding_mask: torch.Tensor | None = None  # [batch, tokens], True = padding; None without a mask

    @property
    def attention_mask(self):
        """[batch, tokens], True = kept token (transformers' convention); None without a mask."""
        return None if self.padding_mask is None else ~self.padding_mask


class GradMultiply(torch.autograd.Function):
    """Identity forward; the gradient times `scale` backward (layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class WeightNormConv1d(nn.Module):
    """A Conv1d with weight = g * v / ||v||, the norm over all axes but the kernel's (torch's weight_norm
    with dim=2): parameters `weight_g` [1, 1, k] and `weight_v` [out, in / groups, k], as the checkpoint."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.groups = groups
        self.padding = kernel // 2
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))  # g before v: the checkpoint's order
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel))
        # uniform init (cheap on the meta device the loader builds on); g = 1: unit-norm kernel slices
        nn.init.uniform_(self.weight_v, -1.0, 1.0)

    @property
    def weight(self):
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, padding=self.padding, groups=self.groups)


class TrimEnd(nn.Module):
    """Drop the last step: an even kernel with padding k/2 gives one step too many."""

    def __init__(self, remove: int):
        super().__init__()
        self.remove = remove

    def forward(self, x):
        return x[..., : x.shape[-1] - self.remove]


class FeedForward(nn.Module):
    """The FFN sub-layer fc2(act(fc1 x)) as one module, so hooks (PETL adapters) can sit around it. It
    holds no parameters: fc1 and fc2 stay on the layer, where the checkpoint's keys put them."""

    def __init__(self, config: BEATsConfig):
        super().__init__()
        self.activation = ACTIVATION_FUNCTIONS[config.activation_fn]
        self.dropout = config.activation_dropout

    def forward(self, hidden_states, fc1: nn.Linear, fc2: nn.Linear):
        x = self.activation(fc1(hidden_states))
        return fc2(F.dropout(x, self.dropout, self.training))


class EncoderLayer(nn.Module):
    def __init__(self, config: BEATsConfig, relative_attention_bias: nn.Embedding | None = None):
        super().__init__()
        d = config.encoder_embed_dim
        self.self_attn = SelfAttention(config, relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.ffn = FeedForward(config)
        self.pre_norm = config.layer_norm_first
        self.alpha = config.deep_norm_alpha
        self.dropout = config.dropout

    def forward(self, x, padding_mask=None, position_bias=None):
        def drop(y):
            return F.dropout(y, self.dropout, self.training)

        if self.pre_norm:
            x = x + drop(self.self_attn(self.self_attn_layer_norm(x), padding_mask, position_bias))
            return x + drop(self.ffn(self.final_layer_norm(x), self.fc1, self.fc2))
        x = self.self_attn_layer_norm(x * self.alpha + drop(self.self_attn(x, padding_mask, position_bias)))
        return self.final_layer_norm(x * self.alpha + drop(self.ffn(x, self.fc1, self.fc2)))


class Encoder(nn.Module):
    def __init__(self, config: BEATsConfig):
        super().__init__()
        d = config.encoder_embed_dim
        self.config = config
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(d, config.conv_pos, config.conv_pos_groups), TrimEnd(1 - config.conv_pos % 2), nn.GELU())
        table = None
        if config.relative_position_embedding:  # xavier init, as the authors'; uniform: cheap on meta
            table = nn.Embedding(config.num_buckets, config.encoder_attention_heads,
                                 _weight=nn.init.xavier_uniform_(torch.empty(config.num_buckets,
                                                                             config.encoder_attention_heads)))
        self.layers = nn.ModuleList([EncoderLayer(config, table if i == 0 else None)
                                     for i in range(config.encoder_layers)])
        if table is not None:
            for layer in self.layers[1:]:  # one table: the same module in every layer
                layer.self_attn.relative_attention_bias = table
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, x, padding_mask=None, output_hidden_states: bool = False):
        cfg = self.config
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not cfg.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, cfg.dropout, self.training)
        bias = self.layers[0].self_attn.position_bias(x.shape[1]) if cfg.relative_position_embedding else None
        hidden = [x]
        for layer in self.layers:
            if cfg.layer_wise_gradient_decay_ratio != 1.0 and x.requires_grad:  # nothing before it trains else
                x = GradMultiply.apply(x, cfg.layer_wise_gradient_decay_ratio)
            if not (self.training and cfg.encoder_layerdrop > 0 and torch.rand(()) < cfg.encoder_layerdrop):
                x = layer(x, padding_mask, bias)
            hidden.append(x)
        if cfg.layer_norm_first:
            x = self.layer_norm(x)
        return x, (tuple(hidden) if output_hidden_states else None)


class BEATsModel(nn.Module):
    """BEATs from its authors' configuration; `surgeon.beats.load_pt` fills it from a checkpoint.

    `model(input_values=wav, padding_mask=mask)` with wav [batch, samples] at 16 kHz and mask
    [batch, samples] (True = padding; or `attention_mask`, 1 = real sample) returns a BEATsOutput."""

    def __init__(self, config: BEATsConfig, label_dict: dict | None = None):
        super().__init__()
        config.validate()
        self.config = config
        self.label_dict = label_dict  # class index -> AudioSet label id, for fine-tuned checkpoints
        self.mask_mode = "authors"  # how a sample mask becomes a token mask when forward is not told
        e, d, p = config.embed_dim, config.encoder_embed_dim, config.input_patch_size
        # registration order is the authors' (their state_dict order)
        self.post_extract_proj = nn.Linear(e, d) if e != d else None
        self.patch_embedding = nn.Conv2d(1, e, kernel_size=p, stride=p, bias=config.conv_bias)
        self.encoder = Encoder(config)
        self.layer_norm = nn.LayerNorm(e)
        self.predictor = nn.Linear(d, config.predictor_class) if config.finetuned_model else None

    def add_label_head(self, num_classes: int) -> None:
        """A new predictor for `num_classes` (a training task's head, ESC-50's say): a Linear on every token,
        averaged over the kept ones, i.e. a Linear over the mean of the kept tokens; the cfg then describes a
        fine-tuned model of that many classes (saved as such), without the AudioSet label_dict."""
        ref = self.patch_embedding.weight
        self.predictor = nn.Linear(self.config.encoder_embed_dim, num_classes).to(ref.device, ref.dtype)
        self.config.finetuned_model = True
        self.config.predictor_class = num_classes
        self.label_dict = None

    def set_attn_implementation(self, kind: str) -> None:
        """transformers' switch: BEATs has one attention, torch's scaled_dot_product_attention."""
        if kind != "sdpa":
            raise ValueError(f"BEATs computes its attention with scaled_dot_product_attention only, not {kind!r}")

    def save_pretrained(self, directory, max_shard_size=None):
        """A BEATs model directory (config.json + model.safetensors, the table once): surgeon/beats/directory.py.
        The authors' .pt: surgeon.beats.save_pt. Always one file (max_shard_size, taken for the same call as
        transformers models, is not applied: a base model is about 360 MB)."""
        from surgeon.beats.directory import save_dir

        return save_dir(self, directory)

    # -- steps --------------------------------------------------------------------------------------
    def fbank(self, waveform):
        """[batch, samples] -> [batch, frames, 128] normalised fbank."""
        return frontend.fbank(waveform)

    def embed(self, fbank):
        """[batch, frames, 128] fbank -> [batch, tokens, d] encoder input, tokens time-major."""
        x = self.patch_embedding(fbank.unsqueeze(1).to(self.patch_embedding.weight.dtype))  # [B, e, T, F]
        x = self.layer_norm(x.flatten(2).transpose(1, 2))  # flatten (T, F): token t * F + f
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return F.dropout(x, self.config.dropout_input, self.training)

    def token_padding_mask(self, sample_mask, mode: str = "authors"):
        """[batch, samples] (True = padding) -> [batch, tokens]; modes in frontend.MASK_MODES."""
        return frontend.token_mask(sample_mask, self.config.input_patch_size, self.config.frequency_patches, mode)

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, input_values, padding_mask=None, attention_mask=None, output_hidden_states: bool = False,
                mask_mode: str | None = None) -> BEATsOutput:
        """mask_mode: "authors" or "strict" (frontend.MASK_MODES); default self.mask_mode ("authors")."""
        wav, sample_mask = self._check_inputs(input_values, padding_mask, attention_mask)
        mask = None
        if sample_mask is not None:
            mask = self.token_padding_mask(sample_mask, mask_mode or self.mask_mode)
            empty = (~mask).sum(1) == 0
            if empty.any():
                raise SurgeonError(f"padding mask: item {int(empty.nonzero()[0])} keeps no token (too little "
                                   f"unpadded audio for one {self.config.input_patch_size}-frame patch)")
        x = self.embed(self.fbank(wav))
        x, hidden = self.encoder(x, mask, output_hidden_states)
        logits = self._predict(x, mask) if self.predictor is not None else None
        return BEATsOutput(last_hidden_state=x, logits=logits, hidden_states=hidden, padding_mask=mask)

    def _predict(self, x, mask):
        logits = self.predictor(F.dropout(x, self.config.predictor_dropout, self.training))
        if mask is None:
            return logits.mean(dim=1)
        kept = (~mask).sum(dim=1, keepdim=True).to(logits.dtype)
        return logits.masked_fill(mask.unsqueeze(-1), 0.0).sum(dim=1) / kept

    def extract_features(self, source, padding_mask=None):
        """The authors' interface: (sigmoid probabilities for fine-tuned checkpoints, else the features,
        and the token padding mask)."""
        out = self(input_values=source, padding_mask=padding_mask)
        first = torch.sigmoid(out.logits) if out.logits is not None else out.last_hidden_state
        return first, out.padding_mask

    def _check_inputs(self, wav, padding_mask, attention_mask):
        if not isinstance(wav, torch.Tensor) or not wav.is_floating_point() or wav.dim() not in (1, 2):
            what = f"a {wav.dim()}-D {wav.dtype} tensor" if isinstance(wav, torch.Tensor) else type(wav).__name__
            raise SurgeonError(f"input_values must be a float waveform [batch, samples], got {what}")
        wav = wav.unsqueeze(0) if wav.dim() == 1 else wav
        shortest = frontend.min_samples(self.config.input_patch_size)
        if wav.shape[1] < shortest:
            raise SurgeonError(f"input_values has {wav.shape[1]} samples; BEATs needs at least {shortest} "
                               f"({self.config.input_patch_size} fbank frames at {frontend.SAMPLE_RATE} Hz)")
        if padding_mask is not None and attention_mask is not None:
            raise SurgeonError("pass padding_mask (True = padding) or attention_mask (1 = audio), not both")
        mask = padding_mask if attention_mask is None else attention_mask
        if mask is None:
            return wav, None
        mask = mask.unsqueeze(0) if mask.dim() == 1 else mask
        if tuple(mask.shape) != tuple(wav.shape):
            name = "padding_mask" if attention_mask is None else "attention_mask"
            raise SurgeonError(f"{name} has shape {list(mask.shape)}, input_values {list(wav.shape)}: "
                               "they must match (one flag per sample)")
        mask = mask.to(device=wav.device, dtype=torch.bool)
        return wav, (mask if attention_mask is None else ~mask)
