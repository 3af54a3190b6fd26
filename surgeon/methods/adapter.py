"""Adapter methods: an adapter module from `surgeon.modules.ADAPTERS` beside MHSA and/or FFN of every
layer, with the placement options of placement.py. Each concrete method (bottleneck.py, convpass.py,
...) is this class with its defaults and its own options.

Freezing and accounting: the adapter's parameters train, and so does the LayerNorm that belongs to
each sub-layer an adapter sits beside (`layernorm_before` for MHSA, `layernorm_after` for FFN in AST),
as papers 000-002 count them (petl-facts.md); `train_norm = false` keeps it frozen (LoAA's default,
as paper 004 counts).
"""
from __future__ import annotations

from typing import ClassVar

from surgeon.errors import SurgeonError
from surgeon.methods.base import Method
from surgeon.methods import tables
from surgeon.methods.options import resolve_options, width
from surgeon.methods.placement import SEQUENTIAL_BEFORE, complete_placement, hooks_for, locations
from surgeon.methods.target import SUBLAYER_NORM, SUBLAYER_ROLE, Target

# the tables are declared once, torch-free, in surgeon.methods.tables
PLACEMENT_OPTIONS, WIDTH_OPTIONS = tables.PLACEMENT, tables.WIDTH


def check_sublayer(owner: str, target: Target, location: str) -> None:
    """The hooked module must compute the whole sub-layer (its last Linear maps back to d): BERT's
    FFN role, for one, is only the up-projection."""
    if not target.computes_sublayer(SUBLAYER_ROLE[location]):
        raise SurgeonError(f"{owner}: {target.family.name}'s {location} module does not compute the whole sub-layer, "
                           f"so an adapter cannot sit beside it; use --location mhsa")


class AdapterMethod(Method):
    default_reduction: ClassVar[float] = 64.0
    default_placement: ClassVar[str] = "pfeiffer"
    default_train_norm: ClassVar[bool] = True  # the papers' convention (petl-facts.md); LoAA's paper: no

    @property
    def OPTIONS(self):  # noqa: N802 (a per-method table, like the other methods' OPTIONS)
        return tables.OPTIONS[self.name]

    def resolve(self, target: Target, options) -> dict:
        opts = resolve_options(self.name, self.OPTIONS, options)
        if opts["reduction"] is None and opts["bottleneck"] is None:
            opts["reduction"] = self.default_reduction
        opts["bottleneck"] = width(self.name, target.hidden_size, opts["bottleneck"], opts["reduction"])
        if opts["train_norm"] is None:
            opts["train_norm"] = self.default_train_norm
        self.check(target, opts)
        opts = complete_placement(self.name, opts)
        for location in locations(opts):
            check_sublayer(self.name, target, location)
        return opts

    def check(self, target: Target, opts: dict) -> None:
        """Model-dependent checks of the method's own options."""

    def build(self, target: Target, opts: dict, location: str):
        """A fresh adapter module for one sub-layer."""
        raise NotImplementedError

    def prepare(self, target: Target, opts: dict) -> None:
        """Model changes the adapter needs before it is attached (LoAA's re-patching)."""

    def apply(self, target: Target, opts: dict) -> list[str]:
        from surgeon.methods.padding import track_padding

        self.prepare(target, opts)
        track_padding(target, self.name)  # padded speech batches: the frame mask reaches the modules
        unfrozen = []
        for i in range(target.num_layers):
            for location in locations(opts):
                sub = target.module(i, SUBLAYER_ROLE[location])
                adapter = self.build(target, opts, location)
                ref = next(iter(sub.parameters()), None)
                if ref is not None:
                    adapter.to(device=ref.device, dtype=ref.dtype)
                sub.add_module(self.attr, adapter)
                for hook in hooks_for(self.name, self.attr, opts):
                    hook.register(sub)
                if opts["train_norm"]:
                    norm = target.path(i, SUBLAYER_NORM[location])
                    unfrozen += [f"{norm}.{n}" for n, _ in target.model.get_submodule(norm).named_parameters()]
        return unfrozen
