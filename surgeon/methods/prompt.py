"""Prompt tuning (VPT): P learnable tokens inserted after the embeddings, behind the special tokens
([CLS, DIST] in AST, [CLS] in ViT, none in HuBERT / wav2vec 2.0).

Shallow (default P = 300): one set enters before the first layer and travels through all layers.
Deep (--deep, default P = 25): every layer gets a fresh set, replacing the previous layer's outputs at
the prompt positions. After the last layer the prompt positions are removed, so the encoder returns
the base model's sequence length and the heads pool as before. A padding mask passed to the layers is
opened to the prompt positions.

AST's distillation token (--dist / --no-dist): kept by default, [CLS, DIST, P, patches]; --no-dist
builds [CLS, P, patches] as the authors' code does (the papers' recipes): DIST and its mask entries
leave before the first layer, and after the last layer its slot is refilled with the CLS output, so
transformers' pooled head, the mean of positions 0 and 1, pools CLS alone.

Not an identity at initialisation: prompts are attended to by every token. What holds instead, and is
tested: the output equals running the base layers on [special, prompts, rest] and dropping the prompt
positions. Prompts are initialised U(-v, v), v = sqrt(6 / (3 * 16 * 16 + d)), as VPT and the authors'
code (0.0625 at d = 768; the 3 * 16 * 16 is VPT's ViT-B/16 patch fan-in, whatever the model).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from surgeon.heads import POOL_FLAG, POOL_STASH
from surgeon.methods.base import Method
from surgeon.methods.hooks import SurgeonHook, first_input, first_output, replace_first_input, replace_first_output
from surgeon.methods import tables
from surgeon.methods.options import resolve_options


VPT_PATCH_FAN_IN = 3 * 16 * 16  # VPT's constant: a ViT-B/16 patch's inputs


def vpt_bound(d_model: int) -> float:
    """VPT's uniform bound for prompt (and prefix) tokens: sqrt(6 / (3 * 16 * 16 + d)), 0.0625 at d = 768."""
    return math.sqrt(6.0 / (VPT_PATCH_FAN_IN + d_model))


class PromptTokens(nn.Module):
    def __init__(self, num_tokens: int, d_model: int):
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(num_tokens, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = vpt_bound(self.prompts.shape[-1])
        nn.init.uniform_(self.prompts, -bound, bound)


def _drop(mask, start: int, n: int):
    """Remove n positions at start from a layer's attention mask ([..., Tq, Tk], or a frame mask [B, T]),
    as the tokens left."""
    if n == 0 or mask is None or not torch.is_tensor(mask) or mask.dim() < 2:
        return mask
    for dim in (-1,) if mask.dim() == 2 else (-1, -2):
        if mask.shape[dim] != 1:
            mask = torch.cat([mask.narrow(dim, 0, start), mask.narrow(dim, start + n, mask.shape[dim] - start - n)],
                             dim=dim)
    return mask


def _insert(mask, start: int, n: int, marks_padding: bool = False):
    """Open a layer's attention mask to n prompt positions at start.

    A 4-D mask ([..., Tq, Tk], bool or additive): every query may attend to the prompts, and the prompts
    attend where the first token (CLS, or the first frame) does, so they never see padding, which would
    reach every token through them. A 2-D mask is a frame mask [B, T] (WavLM hands each layer the
    encoder's keep mask, 1 = a real frame; `marks_padding`: True = padded): the prompts are kept."""
    if mask is None or not torch.is_tensor(mask) or mask.dim() < 2:
        return mask
    if mask.dim() == 2:
        keep = torch.full((mask.shape[0], n), not marks_padding, dtype=mask.dtype, device=mask.device)
        return torch.cat([mask[:, :start], keep, mask[:, start:]], dim=1)
    for dim in (-1, -2):
        if mask.shape[dim] == 1:
            continue
        if dim == -1:
            shape = list(mask.shape)
            shape[dim] = n
            fill = torch.ones(shape, dtype=torch.bool, device=mask.device) if mask.dtype == torch.bool \
                else torch.zeros(shape, dtype=mask.dtype, device=mask.device)
        else:
            fill = mask.narrow(-2, 0, 1).expand(*mask.shape[:-2], n, mask.shape[-1])
        mask = torch.cat([mask.narrow(dim, 0, start), fill, mask.narrow(dim, start, mask.shape[dim] - start)], dim=dim)
    return mask


class PromptIn(SurgeonHook):
    """Pre-hook on layer i: insert (first layer) or replace (deep) the prompts behind the first `start`
    tokens, dropping the `dropped` special tokens after them at the first layer; fit the mask."""

    pre = True

    def __init__(self, method, attr, start: int, count: int, first: bool, dropped: int = 0, marks_padding: bool = False):
        super().__init__(method, attr)
        self.start, self.count, self.first, self.dropped = start, count, first, dropped
        self.marks_padding = marks_padding  # a 2-D frame mask is True on padding (the family's encoder_mask)

    def __call__(self, module, args, kwargs):
        h = first_input(args, kwargs)
        tokens = getattr(module, self.attr, None)
        s, n, dropped = self.start, self.count, self.dropped
        if self.first:
            base_len = h.shape[1]
            rest = h[:, s + dropped:]
        else:
            base_len = h.shape[1] - n + dropped
            rest = h[:, s + n:]
        if self.first or tokens is not None:
            if tokens is None:
                raise RuntimeError("prompt: the first layer has no prompts")
            prompts = tokens.prompts.to(h.dtype).unsqueeze(0).expand(h.shape[0], -1, -1)
            h = torch.cat([h[:, :s], prompts, rest], dim=1)
        args, kwargs = replace_first_input(args, kwargs, h)
        mask_at = 1 if len(args) > 1 else None
        mask = args[1] if mask_at else kwargs.get("attention_mask")
        if torch.is_tensor(mask) and mask.shape[-1] == base_len:  # every layer gets the base model's mask
            mask = _insert(_drop(mask, s, dropped), s, n, self.marks_padding)
            if mask_at:
                args = (args[0], mask, *args[2:])
            else:
                kwargs = {**kwargs, "attention_mask": mask}
        return args, kwargs


class PromptOut(SurgeonHook):
    """Forward hook on the last layer: drop the prompt positions; refill dropped special-token slots
    with copies of the first token (CLS), so the sequence has the base model's length and layout."""

    def __init__(self, method, attr, start: int, count: int, dropped: int = 0):
        super().__init__(method, attr)
        self.start, self.count, self.dropped = start, count, dropped

    def __call__(self, module, args, kwargs, output):
        h = first_output(output)
        s, n = self.start, self.count
        if module.__dict__.get(POOL_FLAG):  # the mean head (surgeon.heads) averages the prompt outputs too
            module.__dict__[POOL_STASH] = (h[:, s:s + n], s, self.dropped)
        fill = [h[:, :1]] * self.dropped
        h = torch.cat([h[:, :s], *fill, h[:, s + n:]], dim=1)
        return replace_first_output(output, h)


class PromptMethod(Method):
    name = "prompt"
    OPTIONS = tables.OPTIONS["prompt"]  # declared in surgeon.methods.tables

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
        if not has_dist(target):
            if opts["dist"] is not None:
                raise SurgeonError(f"prompt: option dist: {target.family.name} has no distillation token")
        elif opts["dist"] is None:
            opts["dist"] = True
        return opts

    def apply(self, target, opts):
        n, special = opts["num_tokens"], target.family.num_special_tokens
        start = 1 if opts["dist"] is False else special  # the authors' layout keeps CLS only
        dropped = special - start
        last = target.num_layers - 1
        for i in range(target.num_layers):
            layer = target.module(i)
            if i == 0 or opts["deep"]:
                ref = next(layer.parameters())
                layer.add_module(self.attr, PromptTokens(n, target.hidden_size).to(device=ref.device, dtype=ref.dtype))
            PromptIn(self.name, self.attr, start, n, first=i == 0, dropped=dropped,
                     marks_padding=target.family.encoder_mask == "pad").register(layer)
        PromptOut(self.name, self.attr, start, n, dropped=dropped).register(target.module(last))
        return []


def has_dist(target) -> bool:
    """A model whose special tokens are [CLS, DIST] (AST; DeiT's distilled form)."""
    return target.family.num_special_tokens == 2
