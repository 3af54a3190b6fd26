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

A numeric key (weight, density, and the method's float parameters: lambda, t, lam) may also be a
gradient across the layers or a list of conditions (surgeon/merging/settings.py); every number in it
is checked against the key's range. `method = "mam"` merges one [[models]] entry (the source) into
`base` (the target) as `surgeon merge --source --target` does.

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


def _setting(value, check):
    """A setting (surgeon.merging.settings) whose every number passes `check(number) -> problem | None`."""
    from surgeon.merging.settings import leaves, parse_setting

    setting = parse_setting(value, role_names())
    for where, number in leaves(setting):
        problem = check(number)
        if problem:
            raise ValueError(f"{problem} (got {number!r}{' at ' + where.lstrip('.') if where else ''})")
    return setting


def _finite(x: float):
    return None if math.isfinite(x) else "Input should be a finite number"


def _density(x: float):
    if not x > 0.0:
        return "Input should be greater than 0"
    return None if x <= 1.0 else "Input should be less than or equal to 1"


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str = Field(min_length=1)
    weight: Any = 1.0  # a setting: a number, a gradient across the layers, or conditions
    density: Any = 1.0

    @field_validator("weight")
    @classmethod
    def _weight(cls, value):
        return _setting(value, _finite)

    @field_validator("density")
    @classmethod
    def _density(cls, value):
        return _setting(value, _density)


class MergeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    base: Optional[str] = Field(None, min_length=1)
    dtype: Optional[str] = None
    roles: Optional[list[str]] = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    models: list[ModelEntry] = Field(min_length=1)
    _params: Any = PrivateAttr(None)
    _settings: dict = PrivateAttr(default_factory=dict)  # Params attribute -> non-scalar setting

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
    def weights(self) -> tuple:
        """The models' weight settings (numbers unless given per layer or per tensor)."""
        return tuple(m.weight for m in self.models)

    @property
    def densities(self) -> tuple:
        return tuple(m.density for m in self.models)

    @property
    def per_tensor(self) -> bool:
        """Whether some value differs between tensors (a gradient or conditions)."""
        from surgeon.merging.settings import is_scalar

        return bool(self._settings) or not all(is_scalar(v) for v in self.weights + self.densities)

    def values_at(self, where) -> tuple[tuple[float, ...], tuple[float, ...], Any]:
        """(weights, densities, params) for the tensor at `where` (surgeon.merging.settings.Where)."""
        from surgeon.merging.settings import evaluate

        weights = tuple(evaluate(w, where, 1.0) for w in self.weights)
        densities = tuple(evaluate(d, where, 1.0) for d in self.densities)
        params = self._params
        if self._settings:
            defaults = {a: getattr(params, a) for a in self._settings}
            params = params.model_copy(update={a: evaluate(s, where, defaults[a]) for a, s in self._settings.items()})
        return weights, densities, params

    def module(self):
        from surgeon.merging.methods import method

        return method(self.method)


def parse_roles(text: str, option: str = "--roles") -> list[str]:
    """'q,k,v' -> ["q", "k", "v"], each an anatomy role (a one-line error with a did-you-mean otherwise)."""
    roles = [r.strip() for r in text.split(",") if r.strip()]
    try:
        return MergeConfig._known_roles(roles)
    except ValueError as e:
        raise SurgeonError(f"{option}: {e}") from None


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
            params, settings, more = _params(method(name), name, parameters)
            problems += more
            if config is not None:
                config._params, config._settings = params, settings
    if problems:
        _fail(source, problems)
    return config


def _params(module, name: str, values: dict):
    """(the method's Params, {attribute: setting} of its per-layer values, problems) for [parameters].

    A float parameter given as a gradient or conditions is checked number by number with the rest of
    the table; Params holds its first number, and values_at() puts in each tensor's own."""
    from surgeon.merging.methods import make_params
    from surgeon.merging.settings import leaves, parse_setting

    floats = {(f.alias or a): a for a, f in module.Params.model_fields.items() if f.annotation is float}
    settings, problems, scalar_values = {}, [], dict(values)
    for key, value in values.items():
        if key not in floats or not isinstance(value, (list, dict)):  # a scalar: Params checks it
            continue
        try:
            setting = parse_setting(value, role_names())
        except ValueError as e:
            problems.append(f"parameters.{key}: {e}")
            scalar_values.pop(key)
            continue
        numbers = leaves(setting)
        for where, number in numbers:
            try:
                make_params(name, {**values, key: number})
            except ValidationError as e:
                for err in e.errors():
                    if err["loc"] == (key,):
                        problems.append(f"parameters.{key}{where}: {err['msg'].removeprefix('Value error, ')} (got {number!r})")
        settings[floats[key]] = setting
        scalar_values[key] = numbers[0][1]
    try:
        params = make_params(name, scalar_values)
    except ValidationError as e:
        return None, settings, problems + _format(e.errors(), prefix=("parameters",), root=module.Params)
    try:
        getattr(module, "validate", lambda name, p: None)(name, params)
    except ValueError as e:
        return params, settings, problems + [f"parameters.{e}"]
    return params, settings, list(dict.fromkeys(problems))


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
    parameters = doc.get("parameters")
    if isinstance(parameters, dict) and isinstance(doc.get("method"), str):
        from surgeon.merging.methods import canonical, method, names

        if canonical(doc["method"]) in names():  # files a method reads (mam's layers_from)
            for key in getattr(method(doc["method"]), "PATH_PARAMETERS", ()):
                if key in parameters:
                    parameters[key] = resolve(parameters[key])
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
            hint = getattr(module, "WEIGHT_HINT", None)
            problems.append(f"models.{i}.weight: {name} has no per-model weight" + (f"; {hint}" if hint else ""))
    scalar_weights = all(isinstance(w, float) for w in config.weights)
    if name == "linear" and config.parameters.get("normalize", True) is True and scalar_weights and math.fsum(config.weights) == 0:
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
