"""Prefix tuning: N/2 learnable key tokens and N/2 value tokens per layer (N = 24 by default),
concatenated in front of the projected keys and values of every self-attention.

The attention of each adapted module is routed through the "surgeon_prefix" attention function
(registered in transformers' AttentionInterface): it prepends the layer's prefix to K and V, opens
the attention mask to the prefix positions, and calls the attention implementation the model was
using (sdpa, eager...). Only the adapted attention modules see it: each gets a copy of the config
with that implementation name, restored on strip.

Not an identity at initialisation: extra keys take part of every softmax, so the output changes as
soon as a prefix exists (whatever its values). What holds instead, and is tested: the output equals
attention computed directly over [prefix; K] and [prefix; V]. Tokens start U(-0.0625, 0.0625) at
d = 768 (VPT's bound, as the authors' code; see prompt.py).
"""
from __future__ import annotations

import copy
import sys

import torch
from torch import nn

from surgeon.errors import SurgeonError
from surgeon.methods.base import Method
from surgeon.methods import tables
from surgeon.methods.options import resolve_options

ATTENTION_NAME = "surgeon_prefix"
ORIGINAL_CONFIG = "_surgeon_original_config"


class PrefixTokens(nn.Module):
    def __init__(self, num_tokens: int, d_model: int, inner: str):
        super().__init__()
        self.key = nn.Parameter(torch.empty(num_tokens, d_model))
        self.value = nn.Parameter(torch.empty(num_tokens, d_model))
        self.inner = inner  # the attention implementation the prefix wraps
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-v, v) with VPT's v = sqrt(6 / (3 * 16 * 16 + d)), 0.0625 at d = 768, as the authors' code."""
        from surgeon.methods.prompt import vpt_bound

        bound = vpt_bound(self.key.shape[-1])
        nn.init.uniform_(self.key, -bound, bound)
        nn.init.uniform_(self.value, -bound, bound)


def _open_mask(mask, n: int):
    """Let every query attend to the n prefix positions in front of the keys."""
    if mask is None:
        return None
    shape = (*mask.shape[:-1], n)
    fill = torch.ones(shape, dtype=torch.bool, device=mask.device) if mask.dtype == torch.bool \
        else torch.zeros(shape, dtype=mask.dtype, device=mask.device)
    return torch.cat([fill, mask], dim=-1)


def prefix_attention(module, query, key, value, attention_mask, **kwargs):
    """AttentionInterface function: query/key/value [B, H, T, hd]."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    prefix = module.surgeon_prefix
    batch, heads, _, head_dim = key.shape
    n = prefix.key.shape[0]

    def heads_first(t):
        return t.to(key.dtype).view(1, n, heads, head_dim).transpose(1, 2).expand(batch, -1, -1, -1)

    key = torch.cat([heads_first(prefix.key), key], dim=2)
    value = torch.cat([heads_first(prefix.value), value], dim=2)
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    inner = ALL_ATTENTION_FUNCTIONS.get_interface(prefix.inner, eager)
    return inner(module, query, key, value, _open_mask(attention_mask, n), **kwargs)


def _register() -> None:
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, prefix_attention)


class PrefixMethod(Method):
    name = "prefix"
    OPTIONS = tables.OPTIONS["prefix"]  # declared in surgeon.methods.tables

    def resolve(self, target, options):
        opts = resolve_options(self.name, self.OPTIONS, options)
        n = opts["num_tokens"]
        if n < 2 or n % 2:
            raise SurgeonError(f"prefix: num_tokens must be an even number of at least 2 (N/2 keys + N/2 values), got {n}")
        return opts

    def apply(self, target, opts):
        _register()
        for i in range(target.num_layers):
            attn = target.module(i, "attn")
            if getattr(attn, "takes_prefix", False):  # surgeon's own attention (BEATs) reads the tokens itself
                ref = next(attn.parameters())
                tokens = PrefixTokens(opts["num_tokens"] // 2, target.hidden_size, "native")
                attn.add_module(self.attr, tokens.to(device=ref.device, dtype=ref.dtype))
                continue
            config = getattr(attn, "config", None)
            if config is None:
                raise SurgeonError(f"prefix: {type(attn).__name__} has no attention-implementation switch")
            ref = next(attn.parameters())
            tokens = PrefixTokens(opts["num_tokens"] // 2, target.hidden_size, config._attn_implementation or "eager")
            attn.add_module(self.attr, tokens.to(device=ref.device, dtype=ref.dtype))
            own = copy.copy(config)
            own._attn_implementation = ATTENTION_NAME
            attn.__dict__[ORIGINAL_CONFIG] = config
            attn.config = own
        return []

    def undo(self, target):
        for i in range(target.num_layers):
            attn = target.module(i, "attn")
            original = attn.__dict__.pop(ORIGINAL_CONFIG, None)
            if original is not None:
                attn.config = original
