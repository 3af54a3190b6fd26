"""Per-layer and per-tensor values in a merge config, as mergekit writes them.

A numeric setting (a model's weight or density, a method's t, lambda or lam) is one of:

    0.5                                   one value for every tensor
    [0.0, 0.5, 1.0]                       a gradient across the layers, interpolated linearly
    [{ roles = ["q", "k", "v"], value = 0.7 },  conditions, the first that matches wins; a condition
     { filter = "attention", value = [0, 1] },  names roles (anatomy's names), or a substring of the
     { value = 0.3 }]                           tensor's key (mergekit's `filter`), or neither (any)

Where a tensor sits along the model is t in [0, 1]: layer i of L has t = i / (L - 1) (1 for a single
layer); tensors outside the layers have t = 0 (embeddings, the front end), or t = 1 for the final
norm and the task heads, as mergekit reads gradients. So a gradient with one value per layer gives
every layer its own value exactly. A setting no condition matches falls back to the key's default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

Number = float
Gradient = list[float]


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Union[float, list[float]]
    roles: Optional[list[str]] = Field(None, min_length=1)
    filter: Optional[str] = Field(None, min_length=1)


# what a config may hold for a numeric key
Setting = Union[float, list[float], list[Condition], Condition]


@dataclass(frozen=True)
class Where:
    """A tensor's place, as the settings read it."""

    key: str
    role: Optional[str]  # the anatomy role of a layer tensor; None outside the layers
    t: float


def is_scalar(setting: Any) -> bool:
    return isinstance(setting, (int, float)) and not isinstance(setting, bool)


SHAPES = "a number, a list of numbers (a gradient across the layers) or a list of { value, roles, filter } tables"


def parse_setting(value: Any, known_roles=None) -> Setting:
    """A config value as a Setting; a ValueError naming the accepted shapes otherwise (or an unknown
    role in a condition, when `known_roles` is given)."""
    from pydantic import ValidationError

    if is_scalar(value):
        return float(value)
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value:
        if all(is_scalar(v) for v in value):
            return [float(v) for v in value]
        if all(isinstance(v, dict) for v in value):
            try:
                conds = [Condition.model_validate(v) for v in value]
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"a condition's {loc}: {err['msg']}" if loc else err["msg"]) from None
            for c in conds:
                if not isinstance(c.value, float) and not c.value:
                    raise ValueError("a condition's value is an empty list")
                unknown = [r for r in c.roles or () if known_roles is not None and r not in known_roles]
                if unknown:
                    from surgeon.errors import did_you_mean

                    raise ValueError(f"a condition's roles: unknown role {unknown[0]!r}"
                                     f"{did_you_mean(unknown[0], known_roles)}")
            return conds
    raise ValueError(f"expected {SHAPES} (got {value!r})")


def leaves(setting: Setting) -> list[tuple[str, float]]:
    """Every number a setting can give, with its dotted place inside the setting ('' for a scalar):
    what the config validates against the key's constraints."""
    if is_scalar(setting):
        return [("", float(setting))]
    if isinstance(setting, Condition):
        setting = [setting]
    out = []
    for i, item in enumerate(setting):
        if isinstance(item, Condition):
            inner = leaves(item.value)
            out += [(f".{i}.value{p}", v) for p, v in inner]
        else:
            out.append((f".{i}", float(item)))
    return out


def evaluate(setting: Setting, where: Where, default: Optional[float] = None) -> Optional[float]:
    """The value of `setting` for the tensor at `where` (the default when no condition matches)."""
    if is_scalar(setting):
        return float(setting)
    if isinstance(setting, Condition):
        setting = [setting]
    if setting and all(is_scalar(v) for v in setting):
        return _interpolate([float(v) for v in setting], where.t)
    for cond in setting:
        if cond.roles is not None and where.role not in cond.roles:
            continue
        if cond.filter is not None and cond.filter != "*" and cond.filter not in where.key:
            continue
        return evaluate(cond.value, where, default)
    return default


def _interpolate(values: list[float], t: float) -> float:
    if len(values) == 1:
        return values[0]
    scaled = t * (len(values) - 1)
    nearest = round(scaled)
    if abs(scaled - nearest) < 1e-9:  # a layer that falls on a list entry gets that entry exactly
        return values[nearest]
    i0 = min(int(scaled), len(values) - 1)
    i1 = min(i0 + 1, len(values) - 1)
    frac = scaled - i0
    return (1.0 - frac) * values[i0] + frac * values[i1]


def layer_t(layer: int, num_layers: int) -> float:
    return layer / (num_layers - 1) if num_layers > 1 else 1.0


def where_in(ckpt, key: str) -> Where:
    """The place of `key` in a checkpoint: its layer and role by the anatomy, or before/after the layers."""
    fam, prefix = ckpt.family, ckpt.prefix
    rel = key[len(prefix):] if prefix and key.startswith(prefix) else key
    parsed = fam.parse(rel, ckpt.scheme) or fam.parse(key, ckpt.scheme)
    n = int(ckpt.dims.get("num_layers") or 0)
    if parsed:
        _, layer, role, _ = parsed
        return Where(key, role, layer_t(layer, n))
    m = fam._layer_regex(ckpt.scheme).match(key)
    if m:  # a layer tensor no role names (WavLM's gated position bias)
        return Where(key, None, layer_t(int(m["i"]), n))
    after = any(key.startswith(h + ".") for h in fam.heads) or any(rel.startswith(f + ".") for f in fam.final_norms())
    return Where(key, None, 1.0 if after else 0.0)
