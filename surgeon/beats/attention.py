"""BEATs self-attention: scaled dot-product attention plus a gated relative position bias (as in WavLM).

The bias of head h between query i and key j is table[bucket(j - i), h], with T5's bidirectional buckets
(exact for small distances, logarithmic up to max_distance). The table is one nn.Embedding shared by every
layer (the checkpoint lists it once per layer, on one storage); the encoder computes the bias once per
forward. Each layer gates it per head and per query from its own q_proj output q (head slice, bias
included):  (a, b) = sigmoid(sum of 4-groups of grep_linear(q)),  gate = a * (b * grep_a - 1) + 2.
So whatever changes q (merging, LoRA on q) changes the gate too.

Module and parameter names are the checkpoint's (q_proj, k_proj, v_proj, out_proj, grep_linear, grep_a,
relative_attention_bias), so state_dict() keys are its keys and PETL hooks find the projections.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from surgeon.beats.config import BEATsConfig


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device=None):
    """[length, length] bucket of (key - query) for every query (rows) and key (columns)."""
    positions = torch.arange(length, device=device)
    distance = positions[None, :] - positions[:, None]
    half = num_buckets // 2  # one half of the buckets for keys after the query, one for the rest
    exact = half // 2  # distances below this have a bucket each
    side = (distance > 0).long() * half
    n = distance.abs()
    # float32 arithmetic in the authors' order, so bucket edges fall where theirs do
    far = exact + (torch.log(n.clamp(min=1).float() / exact) / math.log(max_distance / exact)
                   * (half - exact)).long()
    return side + torch.where(n < exact, n, far.clamp(max=half - 1))


class SelfAttention(nn.Module):
    # prefix tuning (surgeon.methods.prefix) adds a `surgeon_prefix` module of key and value tokens, read
    # in forward: they go in front of the projected keys and values, with no position bias and never masked
    takes_prefix = True

    def __init__(self, config: BEATsConfig, relative_attention_bias: nn.Embedding | None = None):
        super().__init__()
        d, heads = config.encoder_embed_dim, config.encoder_attention_heads
        self.num_heads = heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_distance
        self.gated = config.gru_rel_pos
        if relative_attention_bias is not None:  # layer 0 creates the table (first, as in the checkpoint)
            self.relative_attention_bias = relative_attention_bias
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        if self.gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def position_bias(self, length: int):
        """[heads, length, length] relative position bias from this layer's (the shared) table."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance,
                                            device=self.relative_attention_bias.weight.device)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def gate(self, q):
        """[batch, heads, tokens, 1] gate of the position bias, from q_proj's output split into heads."""
        b, h, t, _ = q.shape
        a_and_b = torch.sigmoid(self.grep_linear(q).view(b, h, t, 2, 4).sum(-1))
        gate_a, gate_b = a_and_b.chunk(2, dim=-1)
        return gate_a * (gate_b * self.grep_a - 1.0) + 2.0

    def forward(self, hidden_states, padding_mask=None, position_bias=None):
        """hidden_states [batch, tokens, d]; padding_mask [batch, tokens] (True = padding, masked as keys);
        position_bias [heads, tokens, tokens] or None. Returns [batch, tokens, d]."""
        b, t, d = hidden_states.shape

        def split(x):
            return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

        q = split(self.q_proj(hidden_states))
        k = split(self.k_proj(hidden_states))
        v = split(self.v_proj(hidden_states))
        bias = None
        if position_bias is not None:
            bias = position_bias.unsqueeze(0).to(q.dtype)
            if self.gated:
                bias = self.gate(q) * bias
        if padding_mask is not None:
            keys = torch.zeros(b, 1, 1, t, dtype=q.dtype, device=q.device)
            keys = keys.masked_fill(padding_mask[:, None, None, :], float("-inf"))
            bias = keys if bias is None else bias + keys
        prefix = getattr(self, "surgeon_prefix", None)
        if prefix is not None:
            n = prefix.key.shape[0]

            def tokens(x):
                return x.to(k.dtype).view(1, n, self.num_heads, self.head_dim).transpose(1, 2).expand(b, -1, -1, -1)

            k, v = torch.cat([tokens(prefix.key), k], dim=2), torch.cat([tokens(prefix.value), v], dim=2)
            bias = None if bias is None else F.pad(bias, (n, 0))  # prefix keys: bias 0, never padding
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))
