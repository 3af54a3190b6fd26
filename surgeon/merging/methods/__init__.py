"""The per-tensor merge methods, registered by name (one small module per method).

Each module declares, as data: NAMES (the config names it answers to), NEEDS_BASE, MODELS
(min, max number of models; max None for any), USES_WEIGHT / USES_DENSITY (which per-model keys it
reads), DEFAULTS (per-name parameter defaults, where one module serves several names), a pydantic
`Params` (method-wide [parameters]) and `combine(task, params) -> Tensor`; a method whose models are
not of one family (mam) also has `build(config, allow_pickle=...) -> Plan`, its own plan. Importing this package is
light; a method's module loads when it is looked up, and torch only when a tensor is combined.
Adding a method: one module here, its line in _MODULES, its tests.
"""
from __future__ import annotations

from importlib import import_module

from surgeon.errors import SurgeonError

# config name -> module under surgeon.merging.methods
_MODULES = {
    "linear": "linear",
    "task-arithmetic": "task_arithmetic",
    "ties": "ties",
    "dare-linear": "dare",
    "dare-ties": "dare",
    "slerp": "slerp",
    "mam": "mam",
}


def names() -> tuple[str, ...]:
    return tuple(_MODULES)


def canonical(name: str) -> str:
    """'dare_ties' (mergekit's spelling) and 'DARE-TIES' -> 'dare-ties'."""
    return str(name).strip().lower().replace("_", "-")


def method(name: str):
    """The module of the method registered under `name`; an unknown name gets a did-you-mean."""
    from surgeon.errors import did_you_mean

    key = canonical(name)
    if key not in _MODULES:
        raise SurgeonError(f"unknown merge method {name!r}{did_you_mean(key, _MODULES)}; "
                           f"methods: {', '.join(_MODULES)}")
    return import_module(f"{__name__}.{_MODULES[key]}")


def make_params(name: str, values: dict | None = None):
    """`name`'s Params from the config's [parameters], with the name's own defaults (dare-ties's sign
    consensus) under the given values. Raises pydantic's ValidationError on bad values."""
    module = method(name)
    defaults = getattr(module, "DEFAULTS", {}).get(canonical(name), {})
    return module.Params.model_validate({**defaults, **(values or {})})
