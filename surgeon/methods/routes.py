"""Attention that calls its projection modules, for families whose own attention reads the projection
weights directly (`Family.projection_route`).

WavLM's attention hands `q_proj.weight`, `k_proj.weight`, ... to torch's fused
`multi_head_attention_forward`, so a hook on the projection Linears (LoRA) would never run: the
adapter would sit there and train nothing. While a method that hooks the projections is injected,
`wavlm_attention` stands in for the module's `torch_multi_head_self_attention`: the same arithmetic in
the same order (scaled query, gated position bias and padding added to the scores, softmax, dropout,
head-averaged weights), with q, k, v and out as module calls. Removing the method's hooks removes it.
"""
from __future__ import annotations

import math

import torch


def wavlm_attention(module, hidden_states, attention_mask, gated_position_bias):
    """WavLMAttention.torch_multi_head_self_attention with the projections as module calls."""
    bsz, tgt_len, embed = hidden_states.shape
    heads = module.num_heads
    head_dim = embed // heads

    def split(x):  # [B, T, E] -> [B * H, T, hd], the layout of multi_head_attention_forward
        return x.transpose(0, 1).reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)

    q = split(module.q_proj(hidden_states))
    k = split(module.k_proj(hidden_states))
    v = split(module.v_proj(hidden_states))
    mask = gated_position_bias
    if attention_mask is not None:
        padded = attention_mask.ne(1).view(bsz, 1, 1, tgt_len).expand(-1, heads, -1, -1).reshape(bsz * heads, 1, tgt_len)
        mask = mask.masked_fill(padded, float("-inf"))
    scores = torch.baddbmm(mask, q * math.sqrt(1.0 / head_dim), k.transpose(-2, -1))
    weights = torch.softmax(scores, dim=-1)
    if module.training and module.dropout > 0:
        weights = torch.nn.functional.dropout(weights, p=module.dropout)
    out = torch.bmm(weights, v).transpose(0, 1).reshape(tgt_len * bsz, embed)
    out = module.out_proj(out).view(tgt_len, bsz, embed).transpose(0, 1)
    # head-averaged weights, broadcast back over the heads (as WavLM returns them)
    averaged = weights.view(bsz, heads, tgt_len, tgt_len).mean(dim=1)
    return out, averaged[:, None].broadcast_to(bsz, heads, tgt_len, tgt_len)


wavlm_attention.attribute = "torch_multi_head_self_attention"  # the bound method it stands in for
