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

Keeping lam in [0, 1]: lam = clamp(raw, 0, 1), with raw initialised to init_lam, so the model at
initialisation equals the static merge with init_lam (a sigmoid would need logit(init_lam), which is
infinite at 0 and 1 and not exact in float32). A clamp alone lets raw drift outside [0, 1] where its
gradient is zero and lam would stay stuck; so raw is projected back into [0, 1] (projected gradient
descent) by a forward pre-hook on the model, i.e. before the first use after every optimiser step,
which needs no change to any training loop (`attach(optimizer, model)` does it right after each
step instead, for loops that want it there). Within [0, 1], boundaries included, the gradient of the
clamp is 1, so lam can leave a boundary again.

`bake(model)` writes the final interpolation into plain weights and removes every trace (gates,
parametrisations, buffers): the model then saves with `save_pretrained` and loads with plain
transformers.
"""
from __future__ import annotations

from surgeon.errors import SurgeonError

ROLES = ("q", "k", "v")
GATE_ATTR = "surgeon_lmam"
HOOK_ATTR = "_surgeon_lmam_projection"  # handle of the projection pre-hook (not a module attribute)

import torch
from torch import nn


class LamGate(nn.Module):
    """One layer's interpolation factor."""

    def __init__(self, init_lam: float):
        super().__init__()
        if not 0.0 <= float(init_lam) <= 1.0:
            raise SurgeonError(f"merge.init_lam: {init_lam} is outside [0, 1]")
        self.raw = nn.Parameter(torch.tensor(float(init_lam)))

    def lam(self):
        return self.raw.clamp(0.0, 1.0)

    @torch.no_grad()
    def project_(self) -> None:
        self.raw.clamp_(0.0, 1.0)


class Interpolate(nn.Module):
    """Parametrisation of a q/k/v weight or bias: lam * source + (1 - lam) * original."""

    def __init__(self, gate: LamGate, source):
        super().__init__()
        self.register_buffer("source", source.detach().clone(), persistent=False)
        self.__dict__["gate"] = gate  # not a submodule: the gate is registered once, in its layer

    def forward(self, target):
        # torch.lerp = target + lam (source - target), computed from the nearer end (exact at 0 and 1),
        # the arithmetic `surgeon merge` uses too
        return torch.lerp(target, self.source, self.gate.lam().to(target.dtype))


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
    merged_gates = list(found.values())

    def project(module, args):  # projected gradient descent: raw back into [0, 1] before it is used
        for g in merged_gates:
            g.project_()

    model.__dict__[HOOK_ATTR] = model.register_forward_pre_hook(project)
    return found


def gates(model) -> dict[int, LamGate]:
    """{layer index: gate} of a model with Learnable-MAM applied (empty when none)."""
    from surgeon.hf import layer_modules

    return {i: getattr(layer, GATE_ATTR) for i, layer in enumerate(layer_modules(model)) if hasattr(layer, GATE_ATTR)}


def lams(model) -> dict[int, float]:
    """The current lam per merged layer (what the loop logs every epoch)."""
    return {i: float(g.lam().detach()) for i, g in gates(model).items()}


def project_(model) -> None:
    for g in gates(model).values():
        g.project_()


def attach(optimizer, model):
    """Keep every lam's raw value in [0, 1] after each optimiser step; returns the hook handle."""
    return optimizer.register_step_post_hook(lambda *_: project_(model))


def lam_parameters(model) -> list:
    """The lam parameters (their own optimiser group: they may want another learning rate)."""
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
    handle = model.__dict__.pop(HOOK_ATTR, None)
    if handle is not None:
        handle.remove()
    return final
