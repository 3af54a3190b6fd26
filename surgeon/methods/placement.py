"""Where an adapter sits around a sub-layer (MHSA or FFN) and how its output re-enters the layer.

With u the adapter's input and A the adapter (its own output, no residual):
- position "before": u is the sub-layer's input (the output of its LayerNorm in a pre-norm layer);
  position "after": u is the sub-layer's output y.
- insertion "sequential": u is replaced by A(u) (+ u with residual): before the sub-layer its input
  becomes A(u) [+ u]; after it, its output becomes A(y) [+ y].
- insertion "parallel": the sub-layer's output becomes y + A(u) [+ u with residual].
Residual defaults to on for sequential and off for parallel (journal paper, Table VII: a parallel
adapter already is a residual branch). So parallel-after equals sequential-after with residual, as
Table III of the journal paper lists them as one row. With the defaults, a zero-initialised adapter
leaves the layer's output exactly unchanged.

Pfeiffer = one sub-layer (--location mhsa|ffn, MHSA by default as in the journal paper), Houlsby =
both. The adapter module lives on the sub-layer module as `<sub-layer>.surgeon_<method>`.
"""
from __future__ import annotations

from surgeon.errors import SurgeonError
from surgeon.methods.hooks import (
    SurgeonHook, first_input, first_output, replace_first_input, replace_first_output,
)

PLACEMENT_LOCATIONS = {"pfeiffer": None, "houlsby": ("mhsa", "ffn")}


def locations(opts: dict) -> tuple[str, ...]:
    """The sub-layers an adapter goes beside: (location,) for Pfeiffer, both for Houlsby."""
    return PLACEMENT_LOCATIONS[opts["placement"]] or (opts["location"],)


def complete_placement(owner: str, opts: dict) -> dict:
    """Fill the defaults that depend on other options (position, residual)."""
    if opts.get("position") is None:
        opts["position"] = "before" if opts["insertion"] == "parallel" else "after"
    if opts.get("residual") is None:
        opts["residual"] = opts["insertion"] == "sequential"
    if opts["placement"] == "houlsby" and opts.get("location") is not None:
        raise SurgeonError(f"{owner}: option location applies to the Pfeiffer placement (Houlsby uses both sub-layers)")
    if opts["placement"] == "pfeiffer" and opts.get("location") is None:
        opts["location"] = "mhsa"
    return opts


class AdapterBefore(SurgeonHook):
    """Sequential, before: the sub-layer reads A(u) [+ u] instead of u."""

    pre = True

    def __init__(self, method: str, attr: str, residual: bool):
        super().__init__(method, attr)
        self.residual = residual

    def __call__(self, module, args, kwargs):
        u = first_input(args, kwargs)
        new = getattr(module, self.attr)(u)
        return replace_first_input(args, kwargs, new + u if self.residual else new)


class AdapterAround(SurgeonHook):
    """Parallel (input before or after the sub-layer), or sequential after."""

    def __init__(self, method: str, attr: str, insertion: str, position: str, residual: bool):
        super().__init__(method, attr)
        self.insertion, self.position, self.residual = insertion, position, residual

    def __call__(self, module, args, kwargs, output):
        y = first_output(output)
        u = first_input(args, kwargs) if self.position == "before" else y
        a = getattr(module, self.attr)(u)
        if self.residual:
            a = a + u
        new = a if self.insertion == "sequential" else y + a
        return replace_first_output(output, new)


def hook_for(method: str, attr: str, opts: dict) -> SurgeonHook:
    insertion, position, residual = opts["insertion"], opts["position"], opts["residual"]
    if insertion == "sequential" and position == "before":
        return AdapterBefore(method, attr, residual)
    return AdapterAround(method, attr, insertion, position, residual)
