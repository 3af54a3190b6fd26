"""Prompt tuning (VPT): P learnable tokens inserted after the embeddings, behind the special tokens
([CLS, DIST] in AST, [CLS] in ViT, none in HuBERT / wav2vec 2.0).

Shallow (default P = 300): one set enters before the first layer and travels through all layers.
Deep (--deep, default P = 25): every layer gets a fresh set, replacing the previous layer's outputs at
the prompt positions. After the last layer the prompt positions are removed, so the encoder returns
the base model's sequence length and the heads pool as before. A padding mask passed to the layers is
opened to the prompt positions.

Not an identity at initialisation: prompts are attended to by every token. What holds instead, and is
tested: the output equals running the base layers on [special, prompts, rest] and dropping the prompt
positions. Prompts are initialised Xavier-uniform as in VPT.
"""
from __future__ import annotations

import torch
from torch import nn

from surgeon.methods.base import Method
from surgeon.methods.hooks import SurgeonHook, first_input, first_output, replace_first_input, replace_first_output
from surgeon.methods.options import Opt, resolve_options


class PromptTokens(nn.Module):
    def __init__(self, num_tokens: int, d_model: int):
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(num_tokens, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.prompts)


def _insert(mask, start: int, n: int):
    """Open a layer's attention mask ([..., Tq, Tk], bool or additive) to n prompt positions at start."""
    if mask is None or not torch.is_tensor(mask) or mask.dim() < 2:
        return mask
    for dim in (-1, -2):
        if mask.shape[dim] == 1:
            continue
        shape = list(mask.shape)
        shape[dim] = n
        fill = torch.ones(shape, dtype=torch.bool, device=mask.device) if mask.dtype == torch.bool \
            else torch.zeros(shape, dtype=mask.dtype, device=mask.device)
        mask = torch.cat([mask.narrow(dim, 0, start), fill, mask.narrow(dim, start, mask.shape[dim] - start)], dim=dim)
    return mask


class PromptIn(SurgeonHook):
    """Pre-hook on layer i: insert (first layer) or replace (deep) the prompts; open the mask."""

    pre = True

    def __init__(self, method, attr, start: int, count: int, first: bool):
        super().__init__(method, attr)
        self.start, self.count, self.first = start, count, first

    def __call__(self, module, args, kwargs):
        h = first_input(args, kwargs)
        tokens = getattr(module, self.attr, None)
        s, n = self.start, self.count
        if self.first:
            base_len = h.shape[1]
            rest = h[:, s:]
        else:
            base_len = h.shape[1] - n
            rest = h[:, s + n:]
        if self.first or tokens is not None:
            if tokens is None:
                raise RuntimeError("prompt: the first layer has no prompts")
            prompts = tokens.prompts.to(h.dtype).unsqueeze(0).expand(h.shape[0], -1, -1)
            h = torch.cat([h[:, :s], prompts, rest], dim=1)
        args, kwargs = replace_first_input(args, kwargs, h)
        mask_at = 1 if len(args) > 1 else None
        mask = args[1] if mask_at else kwargs.get("attention_mask")
        if torch.is_tensor(mask) and mask.shape[-1] == base_len:
            mask = _insert(mask, s, n)
            if mask_at:
                args = (args[0], mask, *args[2:])
            else:
                kwargs = {**kwargs, "attention_mask": mask}
        return args, kwargs


class PromptOut(SurgeonHook):
    """Forward hook on the last layer: drop the prompt positions."""

    def __init__(self, method, attr, start: int, count: int):
        super().__init__(method, attr)
        self.start, self.count = start, count

    def __call__(self, module, args, kwargs, output):
        h = first_output(output)
        h = torch.cat([h[:, : self.start], h[:, self.start + self.count:]], dim=1)
        return replace_first_output(output, h)


class PromptMethod(Method):
    name = "prompt"
    OPTIONS = {
        "num_tokens": Opt(None, "int", (), "P prompts (default 300 shallow, 25 deep)"),
        "deep": Opt(False, "bool", (), "a fresh set of prompts at every layer"),
    }

    def resolve(self, target, options):
        from surgeon.errors import SurgeonError

        opts = resolve_options(self.name, self.OPTIONS, options)
        if opts["num_tokens"] is None:
            opts["num_tokens"] = 25 if opts["deep"] else 300
        if opts["num_tokens"] < 1:
            raise SurgeonError(f"prompt: num_tokens must be at least 1, got {opts['num_tokens']}")
        if not target.family.extendable_sequence:
            raise SurgeonError(f"prompt: {target.family.name}'s relative position bias is sized for its patch grid, "
                               "so no token can join the sequence; use prefix or an adapter")
        return opts

    def apply(self, target, opts):
        n, start = opts["num_tokens"], target.family.num_special_tokens
        last = target.num_layers - 1
        for i in range(target.num_layers):
            layer = target.module(i)
            if i == 0 or opts["deep"]:
                ref = next(layer.parameters())
                layer.add_module(self.attr, PromptTokens(n, target.hidden_size).to(device=ref.device, dtype=ref.dtype))
            PromptIn(self.name, self.attr, start, n, first=i == 0).register(layer)
        PromptOut(self.name, self.attr, start, n).register(target.module(last))
        return []
