"""Where an adapter sits around a sub-layer (MHSA or FFN) and how its output re-enters the layer.

With h the residual stream, Sub the sub-layer, u the adapter's input and A the adapter (its own
output, no residual):
- position "before": u is the sub-layer's input (the output of its LayerNorm in a pre-norm layer);
  position "after": u is the sub-layer's output y.
- insertion "parallel": the sub-layer's output becomes y + A(u) [+ u with residual].
- insertion "sequential", after: the sub-layer's output becomes A(y) [+ y with residual].
- insertion "sequential", before (--sequential-before):
    authors   h + Sub(A(u)) + A(u): the sub-layer reads A(u) and A(u) also joins the residual
              stream. What the authors' code computes and what paper 002 Table III's
              MHSA/FFN-Seq-Before rows measured (the default). Not an identity at initialisation:
              a zero adapter feeds the sub-layer zeros.
    residual  h + Sub(A(u) + u): identity at initialisation (residual on).
    replace   h + Sub(A(u)) (residual off).
Residual defaults to on for sequential and off for parallel (journal paper, Table VII: a parallel
adapter already is a residual branch). So parallel-after equals sequential-after with residual, as
Table III of the journal paper lists them as one row. Except sequential-before in the authors' form,
a zero-initialised adapter leaves the layer's output exactly unchanged with the defaults.

Pfeiffer = one sub-layer (--location mhsa|ffn, MHSA by default as in the journal paper), Houlsby =
both. The adapter module lives on the sub-layer module as `<sub-layer>.surgeon_<method>`.
"""
from __future__ import annotations

from surgeon.errors import SurgeonError
from surgeon.methods.hooks import (
    SurgeonHook, first_input, first_output, replace_first_input, replace_first_output,
)

PLACEMENT_LOCATIONS = {"pfeiffer": None, "houlsby": ("mhsa", "ffn")}
# --sequential-before form -> its residual flag (the adapter's input added to its output)
SEQUENTIAL_BEFORE = {"authors": False, "residual": True, "replace": False}


def locations(opts: dict) -> tuple[str, ...]:
    """The sub-layers an adapter goes beside: (location,) for Pfeiffer, both for Houlsby."""
    return PLACEMENT_LOCATIONS[opts["placement"]] or (opts["location"],)


def complete_placement(owner: str, opts: dict) -> dict:
    """Fill the defaults that depend on other options (position, residual, sequential_before)."""
    if opts.get("position") is None:
        opts["position"] = "before" if opts["insertion"] == "parallel" else "after"
    seq_before = opts["insertion"] == "sequential" and opts["position"] == "before"
    form = opts.get("sequential_before")
    if not seq_before and form is not None:
        raise SurgeonError(f"{owner}: option sequential_before applies to --insertion sequential --position before")
    if seq_before:
        if form is None:  # an explicit residual names the form it always meant
            residual = opts.get("residual")
            form = "authors" if residual is None else "residual" if residual else "replace"
        elif opts.get("residual") not in (None, SEQUENTIAL_BEFORE[form]):
            raise SurgeonError(f"{owner}: sequential_before {form!r} "
                               f"{'adds' if SEQUENTIAL_BEFORE[form] else 'does not add'} the adapter's input; "
                               f"drop option residual")
        opts["sequential_before"], opts["residual"] = form, SEQUENTIAL_BEFORE[form]
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


class SkipSublayer(SurgeonHook):
    """The authors' sequential-before: add the sub-layer's input, A(u) after AdapterBefore, to its
    output (forward hooks see the arguments the pre-hooks made)."""

    def __call__(self, module, args, kwargs, output):
        return replace_first_output(output, first_output(output) + first_input(args, kwargs))


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


def hooks_for(method: str, attr: str, opts: dict) -> list[SurgeonHook]:
    """The hooks that place the adapter `attr` of a sub-layer as `opts` say."""
    insertion, position, residual = opts["insertion"], opts["position"], opts["residual"]
    if insertion == "sequential" and position == "before":
        hooks = [AdapterBefore(method, attr, residual)]
        if opts.get("sequential_before") == "authors":
            hooks.append(SkipSublayer(method, attr))
        return hooks
    return [AdapterAround(method, attr, insertion, position, residual)]
