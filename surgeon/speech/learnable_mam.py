"""Learnable Multimodal Attention Merging (paper 003 section 3.3, eq. 3).

In each merged layer i the query, key and value projections become

    W = lam_i * W_source + (1 - lam_i) * W_target

(their biases too, as `surgeon merge` does unless bias=False), with one lam_i per layer learnt
together with the model. W_source is a frozen buffer; W_target is the Linear's own trainable weight
(or frozen, when a PETL method is trained instead).

How: the q/k/v Linears stay `nn.Linear` (so PETL methods that hook or wrap them still work) and their
`weight`/`bias` get a `torch.nn.utils.parametrize` parametrisation that computes the interpolation;
`parametrizations.weight.original` is W_target. The layer's lam lives in a small `LamGate` module at
`<layer>.surgeon_lmam` (surgery_keys naming), shared by its q, k and v.

Keeping lam in [0, 1] without ever losing its gradient: lam is a sigmoid of an unconstrained value
`raw` (see LamGate), not a clamp of a free lam, whose gradient in torch is 0 at and beyond 0 and 1 (a
layer starting at 0 or 1, or overshooting, would never move again). The sigmoid is shifted so that
lam starts at init_lam exactly (the model at initialisation is the static merge at init_lam, bit for
bit), exact 0 and 1 included, which are anchored a little inside (LamGate.EDGE); the one clamp left
trims the sliver that the shift puts outside [0, 1] and passes the gradient through. No projection or
training-loop hook is needed. raw is excluded from weight decay (LamGate's
`no_weight_decay`, read by surgeon.train.optim), which would otherwise pull lam toward 0.5.

`bake(model)` writes the final interpolation into plain weights and removes every trace (gates,
parametrisations, buffers): the model then saves with `save_pretrained` and loads with plain
transformers.
"""
from __future__ import annotations

import math

from surgeon.errors import SurgeonError

ROLES = ("q", "k", "v")
GATE_ATTR = "surgeon_lmam"

import torch
from torch import nn


class LamGate(nn.Module):
    """One layer's interpolation factor: lam = clamp(init_lam + scale * (sigmoid(raw) - sigmoid(anchor))).

    raw is unconstrained and starts at anchor = logit(init_lam), with exact 0 and 1 anchored at
    logit(EDGE) and logit(1 - EDGE) instead of at infinity; sigmoid(raw) - sigmoid(anchor) is exactly 0
    at the start (the same op on the same value), so lam starts at init_lam exactly. scale (1 inside
    (0, 1), up to 1 / (1 - EDGE) at the ends) stretches the range to cover [0, 1] whatever the anchor;
    the clamp trims the sliver beyond it (at most EDGE wide, at the ends) and passes the gradient
    through unchanged (straight-through), so d lam / d raw = scale * sigmoid'(raw) is never 0."""

    EDGE = 1e-3  # where init_lam 0 and 1 are anchored: the gradient there is about EDGE, not 0
    no_weight_decay = ("raw",)  # decay would pull raw toward 0, i.e. lam toward 0.5 (surgeon.train.optim)

    def __init__(self, init_lam: float):
        super().__init__()
        init = float(init_lam)
        if not 0.0 <= init <= 1.0:
            raise SurgeonError(f"merge.init_lam: {init_lam} is outside [0, 1]")
        inside = min(max(init, self.EDGE), 1.0 - self.EDGE)
        anchor = torch.tensor(math.log(inside) - math.log1p(-inside), dtype=torch.float32)
        s0 = float(torch.sigmoid(anchor))
        self.init = init
        self.scale = max(init / s0, (1.0 - init) / (1.0 - s0))  # init - scale*s0 <= 0, init + scale*(1-s0) >= 1
        self.raw = nn.Parameter(anchor.clone())
        self.register_buffer("anchor", anchor, persistent=False)  # rebuilt from init_lam: not saved

    def lam(self):
        free = self.init + self.scale * (torch.sigmoid(self.raw) - torch.sigmoid(self.anchor))
        return free + (free.clamp(0.0, 1.0) - free).detach()  # exact clamp forward, identity backward


class Interpolate(nn.Module):
    """Parametrisation of a q/k/v weight or bias: lam * source + (1 - lam) * original."""

    def __init__(self, gate: LamGate, source):
        super().__init__()
        self.register_buffer("source", source.detach().clone(), persistent=False)
        self.__dict__["gate"] = gate  # not a submodule: the gate is registered once, in its layer

    def forward(self, target):
        # a lerp from the nearer end (exact at 0 and 1) in two rounded steps, as surgeon.merging.mam.interpolate
        # computes it for `surgeon merge`: bit for bit the same weights on every CPU (torch.lerp fuses the
        # multiply-add on some CPUs and not on others)
        lam = self.gate.lam().to(target.dtype)
        diff = self.source - target
        return torch.where(lam < 0.5, target + lam * diff, self.source - (1 - lam) * diff)


def apply(model, source, *, layers="all", init_lam=0.1, bias: bool = True, train_target: bool = True) -> dict[int, LamGate]:
    """Turn `model`'s q/k/v in `layers` into learnable interpolations with the `source` checkpoint's.

    source: a model reference (read tensor by tensor through Checkpoint, so only the merged matrices
    of the source are ever in memory). Returns {layer: gate}."""
    from torch.nn.utils import parametrize

    from surgeon.hf import layer_module_path
    from surgeon.merging.mam import memory_pairs

    if gates(model):
        raise SurgeonError("Learnable-MAM is already applied to this model")
    # the pairs of the seam's MAM plan, checked from the headers before the model is touched
    pairs, src, side = memory_pairs(model, source, layers=layers, lam=init_lam, bias=bias)
    lam_of = {p.layer: p.lam for p in pairs}
    device = next(model.parameters()).device
    found = {}
    for i in sorted(lam_of):
        found[i] = LamGate(lam_of[i]).to(device)
        model.get_submodule(layer_module_path(model, side.family, i)).add_module(GATE_ATTR, found[i])
    for p in pairs:
        linear = side.module(p.layer, p.role)
        own = getattr(linear, p.leaf)
        parametrize.register_parametrization(linear, p.leaf, Interpolate(found[p.layer], src.get(p.source_key).to(own)))
        getattr(linear.parametrizations, p.leaf).original.requires_grad_(train_target)
    return found


def gates(model) -> dict[int, LamGate]:
    """{layer index: gate} of a model with Learnable-MAM applied (empty when none)."""
    from surgeon.hf import layer_modules

    return {i: getattr(layer, GATE_ATTR) for i, layer in enumerate(layer_modules(model)) if hasattr(layer, GATE_ATTR)}


def lams(model) -> dict[int, float]:
    """The current lam per merged layer (what the loop logs every epoch)."""
    return {i: float(g.lam().detach()) for i, g in gates(model).items()}


def lam_parameters(model) -> list:
    """The lam parameters (unconstrained; lam = LamGate.lam()), in the "method" group of the optimiser:
    they may want another learning rate, and get no weight decay."""
    return [g.raw for g in gates(model).values()]


@torch.no_grad()
def bake(model) -> dict[int, float]:
    """Write lam_i * W_source + (1 - lam_i) * W_target into the plain weights and remove everything
    Learnable-MAM added; returns the final lam per layer."""
    from torch.nn.utils import parametrize

    final = lams(model)
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for leaf in list(module.parametrizations.keys()):
                if any(isinstance(p, Interpolate) for p in module.parametrizations[leaf]):
                    parametrize.remove_parametrizations(module, leaf, leave_parametrized=True)
    from surgeon.hf import layer_modules

    for layer in layer_modules(model):
        if hasattr(layer, GATE_ATTR):
            delattr(layer, GATE_ATTR)
    return final
