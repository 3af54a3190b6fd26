"""LoRA on any subset of W_q, W_k, W_v, W_o: y = x W^T + b + s (x A^T) B^T with A [r, in], B [out, r].

Rank from --rank, or r = round(d / RR) from --reduction (RR 128: r = 6 at d = 768); scaling
s = alpha / RR as in the papers' reference (alpha 8), with RR = d / r when the rank is given.
A gets nn.Linear's default (Kaiming-uniform) init and B zeros, so the output starts unchanged and B
gets gradients at once. The module sits on the adapted Linear as `<linear>.surgeon_lora`
(`lora_A`, `lora_B`), so the merged weight is W + s B A (what `surgeon merge-lora` computes).
No backbone parameter is unfrozen.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from surgeon.methods.base import Method
from surgeon.methods.hooks import SurgeonHook, first_input, first_output, replace_first_output
from surgeon.methods import tables
from surgeon.methods.options import resolve_options, width


class LoRA(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int, scaling: float):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.empty(out_features, rank))
        self.scaling = float(scaling)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x):
        return self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)

    def extra_repr(self) -> str:
        return f"rank={self.lora_A.shape[0]}, scaling={self.scaling:g}"


class LoRAHook(SurgeonHook):
    def __call__(self, module, args, kwargs, output):
        x = first_input(args, kwargs, "input")
        return replace_first_output(output, first_output(output) + getattr(module, self.attr)(x))


class LoRAMethod(Method):
    name = "lora"
    OPTIONS = tables.OPTIONS["lora"]  # declared in surgeon.methods.tables

    def resolve(self, target, options):
        opts = resolve_options(self.name, self.OPTIONS, options)
        d = target.hidden_size
        rr = opts["reduction"] if opts["reduction"] is not None else 128.0
        opts["rank"] = width(self.name, d, opts["rank"], rr, what="rank")
        if opts["reduction"] is None:
            opts["reduction"] = d / opts["rank"]
        if opts["scaling"] is None:
            opts["scaling"] = opts["alpha"] / opts["reduction"]
        opts["targets"] = [t for t in ("q", "k", "v", "o") if t in opts["targets"]]
        return opts

    def apply(self, target, opts):
        for i in range(target.num_layers):
            for role in opts["targets"]:
                linear = target.module(i, role)
                lora = LoRA(linear.in_features, linear.out_features, opts["rank"], opts["scaling"])
                lora.to(device=linear.weight.device, dtype=linear.weight.dtype)
                linear.add_module(self.attr, lora)
                LoRAHook(self.name, self.attr).register(linear)
            target.route_projections(i, self.name)  # WavLM: its attention must call the hooked Linears
        return []
