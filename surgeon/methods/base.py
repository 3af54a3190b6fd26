"""The interface every method implements, and what injection records about it.

A method declares its options (`OPTIONS`), resolves them against a model (`resolve`: defaults that
depend on the hidden size, validity checks), attaches its modules and hooks (`apply`, which returns
the names of the backbone parameters it unfreezes) and undoes anything beyond its modules and hooks
(`undo`). Modules live under attributes named by `surgeon.surgery_keys.module_attr`, so the generic
removal and the parameter accounting find them by name.

Parameter accounting by the papers' convention (petl-facts.md): parameters of the injected modules +
backbone parameters the method unfreezes, never the classification head.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

from surgeon.methods.options import Opt, resolve_options
from surgeon.methods.target import Target
from surgeon.surgery_keys import module_attr


class Method:
    name: ClassVar[str]
    OPTIONS: ClassVar[Mapping[str, Opt]] = {}

    @property
    def attr(self) -> str:
        return module_attr(self.name)

    def resolve(self, target: Target, options: Mapping[str, Any]) -> dict:
        """All options with their defaults, checked against the model (override to complete them)."""
        return resolve_options(self.name, self.OPTIONS, options)

    def apply(self, target: Target, opts: dict) -> list[str]:
        """Attach modules and hooks; return the backbone parameter names this method unfreezes."""
        return []

    def undo(self, target: Target) -> None:
        """Undo changes other than the method's modules and hooks (removed generically)."""

    def summary(self, opts: dict) -> dict:
        """Derived figures worth showing beside the options (`inject --json`): the MoAs' experts per block."""
        return {}
