"""The TOML merge config of `surgeon merge config.toml`, with mergekit's names:

    method = "ties"              # a name in surgeon.merging.methods (mergekit's dare_ties spelling works)
    base = "path/or/alias"       # the base of the task vectors (required where the method needs one)
    dtype = "float32"            # output dtype (default: as stored)
    roles = ["q", "k", "v"]      # optional: merge these roles only
    [parameters]                 # method-wide, validated by the method's Params
    normalize = true
    [[models]]
    ref = "path/a"
    weight = 0.5                 # per model (methods that weight)
    density = 0.6                # per model (ties, dare-*), in (0, 1]

Every problem is reported at once, in one line naming the dotted key:
``merge.toml: 2 problems: base: required by ties ...; models.1.density: ...``. Relative refs resolve
against the config file's folder when that path exists (otherwise they stay aliases or Hub ids).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from surgeon.errors import SurgeonError, did_you_mean


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str = Field(min_length=1)
    weight: float = Field(1.0, allow_inf_nan=False)
    density: float = Field(1.0, gt=0.0, le=1.0)


class MergeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    base: Optional[str] = Field(None, min_length=1)
    dtype: Optional[str] = None
    roles: Optional[list[str]] = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    models: list[ModelEntry] = Field(min_length=1)
    _params: Any = PrivateAttr(None)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from surgeon.merging.methods import canonical, names

        key = canonical(value)
        if key not in names():
            raise ValueError(f"unknown merge method {value!r}{did_you_mean(key, names())} "
                             f"(methods: {', '.join(names())})")
        return key

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value):
        from surgeon.merging.plan import OUTPUT_DTYPES

        if value is not None and value not in OUTPUT_DTYPES:
            raise ValueError(f"{value!r} is not one of {', '.join(OUTPUT_DTYPES)}")
        return value

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value):
        if value is None:
            return None
        if not value:
            raise ValueError("empty; leave roles out to merge every tensor")
        known = role_names()
        unknown = [r for r in value if r not in known]
        if unknown:
            raise ValueError(f"unknown role {unknown[0]!r}{did_you_mean(unknown[0], known)} "
                             f"(roles: {', '.join(known)})")
        return list(dict.fromkeys(value))

    @property
    def params(self):
        """The method's validated Params (its own defaults filled in)."""
        return self._params

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(m.weight for m in self.models)

    @property
    def densities(self) -> tuple[float, ...]:
        return tuple(m.density for m in self.models)

    def module(self):
        from surgeon.merging.methods import method

        return method(self.method)


def role_names() -> tuple[str, ...]:
    """Every role some family's checkpoint keys have (anatomy.py), in a stable order."""
    from surgeon.anatomy import FAMILIES

    seen: dict[str, None] = {}
    for family in FAMILIES.values():
        seen.update(dict.fromkeys(family.disk.roles))
    return tuple(seen)


def parse_config(doc: dict, source: str = "merge config") -> MergeConfig:
    """Validate a config dict (as read from TOML) against the schema and the chosen method."""
    from surgeon.merging.methods import canonical, method, names

    config = None
    try:
        config = MergeConfig.model_validate(doc)
    except ValidationError as e:
        problems = _format(e.errors())
    else:
        problems = _method_problems(config)
    # [parameters] is checked whenever the method is known, so one run lists every problem
    name = canonical(doc.get("method", "")) if isinstance(doc.get("method"), str) else None
    if name in names():
        parameters = doc.get("parameters", {})
        if isinstance(parameters, dict):
            params, more = _params(method(name), name, parameters)
            problems += more
            if config is not None:
                config._params = params
    if problems:
        _fail(source, problems)
    return config


def _params(module, name: str, values: dict):
    """(the method's Params, problems) for the [parameters] table."""
    from surgeon.merging.methods import make_params

    try:
        params = make_params(name, values)
    except ValidationError as e:
        return None, _format(e.errors(), prefix=("parameters",), root=module.Params)
    try:
        getattr(module, "validate", lambda name, p: None)(name, params)
    except ValueError as e:
        return params, [f"parameters.{e}"]
    return params, []


def load_config(path: str | os.PathLike) -> MergeConfig:
    """Read and validate a merge config file; relative refs resolve against its folder."""
    from surgeon.recipes.load import expand, read_toml

    path = Path(path)
    doc = read_toml(path, "merge config")
    here = path.resolve().parent

    def resolve(ref):
        if not isinstance(ref, str) or not ref:
            return ref
        candidate = Path(expand(ref))
        if not candidate.is_absolute():
            candidate = here / candidate
        return str(candidate) if candidate.exists() else ref

    if "base" in doc:
        doc["base"] = resolve(doc["base"])
    for entry in doc.get("models") or []:
        if isinstance(entry, dict) and "ref" in entry:
            entry["ref"] = resolve(entry["ref"])
    return parse_config(doc, str(path))


def _method_problems(config: MergeConfig) -> list[str]:
    """What the chosen method asks of the config, as declared by its module."""
    module = config.module()
    name, problems = config.method, []
    if module.NEEDS_BASE and config.base is None:
        problems.append(f"base: required by {name} (the model the task vectors are taken from)")
    low, high = module.MODELS
    n = len(config.models)
    if low == high and n != low:
        problems.append(f"models: {name} takes exactly {low} models (got {n})")
    elif n < low:
        problems.append(f"models: {name} needs at least {low} models (got {n})")
    elif high is not None and n > high:
        problems.append(f"models: {name} takes at most {high} models (got {n})")
    for i, entry in enumerate(config.models):
        if not module.USES_DENSITY and "density" in entry.model_fields_set:
            problems.append(f"models.{i}.density: {name} has no density (ties and dare-* do)")
        if not module.USES_WEIGHT and "weight" in entry.model_fields_set:
            problems.append(f"models.{i}.weight: {name} has no per-model weight"
                            + ("; set t in [parameters]" if name == "slerp" else ""))
    if name == "linear" and config.parameters.get("normalize", True) is True and math.fsum(config.weights) == 0:
        problems.append("models: linear with normalize = true needs weights that do not sum to 0")
    return problems


def _format(errors: list[dict], prefix: tuple = (), root: type[BaseModel] = MergeConfig) -> list[str]:
    """pydantic errors -> ["dotted.key: problem"], unknown keys with a did-you-mean (as recipes do)."""
    lines = []
    for err in errors:
        loc = prefix + tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "config"
        if err["type"] == "extra_forbidden":
            known = _keys_at(loc[len(prefix):], root)
            lines.append(f"{path}: unknown key{did_you_mean(loc[-1], known)}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "too_short" and loc == ("models",):
            msg = "at least one [[models]] entry is needed"
        elif err["type"] != "value_error" and "input" in err and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
        lines.append(f"{path}: {msg}")
    return list(dict.fromkeys(lines))


def _keys_at(loc: tuple, root: type[BaseModel]) -> list[str]:
    """The keys allowed beside the unknown one at `loc`."""
    model = ModelEntry if (root is MergeConfig and loc and loc[0] == "models") else root
    return [f.alias or k for k, f in model.model_fields.items()]


def _fail(source: str, problems: list[str]):
    count = f"{len(problems)} problems: " if len(problems) > 1 else ""
    raise SurgeonError(f"{source}: {count}{'; '.join(problems)}")
