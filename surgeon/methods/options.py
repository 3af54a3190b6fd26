"""Declared options of a method, checked and completed with their defaults.

Each method lists its options as `Opt` entries (one table per method); `resolve_options` refuses an
unknown name (with a did-you-mean), a value of the wrong type or outside its choices, and returns a
dict with every declared option present. Booleans must be real booleans: "False" is not False.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from surgeon.errors import SurgeonError, did_you_mean


@dataclass(frozen=True)
class Opt:
    default: Any = None
    kind: str = "str"  # "int" | "float" | "bool" | "str" | "list"
    choices: tuple = ()
    help: str = ""
    # what the recipe schema and the command line build from it (surgeon.methods.tables)
    ge: float | None = None  # smallest value allowed
    gt: float | None = None  # bound the value must exceed
    pattern: str | None = None  # a regular expression a string must match
    flags: str | None = None  # the CLI spelling of a boolean, e.g. "--deep/--shallow" (default --x/--no-x)


def _check_value(owner: str, name: str, opt: Opt, value):
    if value is None:
        return None
    bad = SurgeonError
    if opt.kind == "bool":
        if not isinstance(value, bool):
            raise bad(f"{owner}: option {name} must be true or false, got {value!r}")
    elif opt.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"{owner}: option {name} must be an integer, got {value!r}")
    elif opt.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(f"{owner}: option {name} must be a number, got {value!r}")
        value = float(value)
    elif opt.kind == "list":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad(f"{owner}: option {name} must be a list of names, got {value!r}")
        value = list(value)
        for v in value:
            if opt.choices and v not in opt.choices:
                raise bad(f"{owner}: option {name}: {v!r} is not one of {', '.join(opt.choices)}")
        if not value:
            raise bad(f"{owner}: option {name} is empty")
        return value
    elif not isinstance(value, str):
        raise bad(f"{owner}: option {name} must be a string, got {value!r}")
    if opt.choices and value not in opt.choices:
        raise bad(f"{owner}: option {name} must be one of {', '.join(map(str, opt.choices))}, got {value!r}")
    return value


def resolve_options(owner: str, spec: Mapping[str, Opt], given: Mapping[str, Any]) -> dict:
    """Every option of `spec`, from `given` or its default (None where the method computes it)."""
    for name in given:
        if name not in spec:
            known = ", ".join(spec) or "none"
            raise SurgeonError(f"{owner}: unknown option {name!r}{did_you_mean(name, spec)}; options: {known}")
    out = {}
    for name, opt in spec.items():
        value = given.get(name)
        out[name] = _check_value(owner, name, opt, value) if value is not None else opt.default
    return out


def width(owner: str, d_model: int, bottleneck, reduction, what: str = "bottleneck") -> int:
    """b from --bottleneck (wins) or b = round(d / RR) from --reduction, at least 1, at most d.

    A given reduction must be a positive number even when the width wins: it is recorded, and LoRA
    divides by it."""
    valid_rr = reduction is not None and math.isfinite(reduction) and reduction > 0
    if not valid_rr and (reduction is not None or bottleneck is None):
        raise SurgeonError(f"{owner}: reduction must be a positive number, got {reduction!r}")
    b = bottleneck if bottleneck is not None else max(1, round(d_model / reduction))
    if b < 1:
        raise SurgeonError(f"{owner}: {what} must be at least 1, got {b}")
    if b > d_model:
        raise SurgeonError(f"{owner}: {what} {b} is larger than the hidden size {d_model}")
    return b
