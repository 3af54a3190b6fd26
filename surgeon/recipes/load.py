"""Reading a recipe: TOML -> overrides -> path resolution -> strict validation.

- Relative paths in the file resolve against the recipe file's folder; relative paths given with
  ``--set`` resolve against the current directory (where the user typed them).
- ``--set a.b=value`` parses ``value`` with TOML value syntax (``1e-3``, ``true``, ``[1, 2]``,
  ``"text"``); anything that is not a TOML value is taken as a plain string (``data.root=/data/esc``).
- All validation problems are reported at once, in one line: ``recipe.toml: 2 problems: a.b: ...; c: ...``.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from surgeon.errors import SurgeonError

# keys holding filesystem paths; `ref`-like keys may also be aliases or Hub ids, so they resolve only
# when the path exists
PATH_KEYS = (("data", "root"), ("data", "cache_dir"), ("model", "surgery"), ("output", "dir"),
             ("merge", "layers_from"))
REF_KEYS = (("model", "ref"), ("model", "vit_ref"), ("merge", "source"))


def parse_override(text: str) -> tuple[list[str], object]:
    """'train.lr=1e-3' -> (['train', 'lr'], 0.001)."""
    if "=" not in text:
        raise SurgeonError(f"--set {text}: expected KEY=VALUE, e.g. --set train.lr=1e-3")
    key, raw = text.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise SurgeonError(f"--set {text}: bad key {key!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return parts, value


def _set(doc: dict, parts: list[str], value, origin: str) -> None:
    node = doc
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise SurgeonError(f"--set {origin}: {'.'.join(parts[:-1])} is not a table")
        node = child
    node[parts[-1]] = value


def _get(doc: dict, parts) -> object:
    node = doc
    for p in parts:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


def _resolve_paths(doc: dict, base: Path, only: set | None = None) -> None:
    for parts in PATH_KEYS + REF_KEYS:
        if only is not None and parts not in only:
            continue
        value = _get(doc, parts)
        if not isinstance(value, str) or not value:
            continue
        path = Path(expand(value))
        if not path.is_absolute():
            path = base / path
        if parts in PATH_KEYS or path.exists():
            _set(doc, list(parts), str(path), ".".join(parts))


def expand(value: str) -> str:
    """~ and environment variables; $SURGEON_DATA (where the bundled recipes look for datasets)
    defaults to ~/data."""
    if "SURGEON_DATA" in value and "SURGEON_DATA" not in os.environ:
        value = value.replace("${SURGEON_DATA}", "~/data").replace("$SURGEON_DATA", "~/data")
    return os.path.expanduser(os.path.expandvars(value))


def read_toml(path: Path, what: str = "recipe") -> dict:
    """A TOML file (a recipe, a merge config) as a dict; every way of failing is one line naming it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SurgeonError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise SurgeonError(f"{path}: is a directory, not a {what}") from None
    except tomllib.TOMLDecodeError as e:
        raise SurgeonError(f"{path}: not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise SurgeonError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise SurgeonError(f"{path}: cannot read ({e.strerror or e})") from None


def find_recipe(name: str | os.PathLike) -> Path:
    """A recipe file path, or the bundled recipe of that name (`quickstart`, `quickstart.toml`)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    from surgeon.recipes.bundled import bundled_path, names

    bundled = bundled_path(str(name))
    if bundled is not None and not path.exists():
        return bundled
    from surgeon.errors import did_you_mean

    raise SurgeonError(f"{name}: no such recipe file or bundled recipe{did_you_mean(path.stem, names())}")


def recipe_doc(path: str | os.PathLike, overrides: list[str] = ()) -> tuple[Path, dict]:
    """The recipe file found, and its table with the overrides applied and paths resolved (not validated)."""
    path = find_recipe(path)
    doc = read_toml(path)
    _resolve_paths(doc, path.resolve().parent)
    override_keys = set()
    for text in overrides:
        parts, value = parse_override(text)
        _set(doc, parts, value, text)
        override_keys.add(tuple(parts))
    _resolve_paths(doc, Path.cwd(), only=override_keys)
    return path, doc


def schema_problems(doc: dict):
    """(Recipe, []) when the table is a valid recipe, else (None, every schema problem with its dotted key)."""
    from pydantic import ValidationError

    from surgeon.recipes.schema import Recipe, format_errors

    try:
        return Recipe.model_validate(doc), []
    except ValidationError as e:
        return None, format_errors(e.errors())


def problems_line(path, problems: list[str]) -> str:
    count = f"{len(problems)} problems: " if len(problems) > 1 else ""
    return f"{path}: {count}{'; '.join(problems)}"


def load_recipe(path: str | os.PathLike, overrides: list[str] = (), check_paths: bool = True):
    """Read, override and validate a recipe; returns a `Recipe` (schema.py)."""
    path, doc = recipe_doc(path, overrides)
    recipe, problems = schema_problems(doc)
    if recipe is None:
        raise SurgeonError(problems_line(path, problems))
    if check_paths:
        check_recipe_paths(recipe, path)
    recipe._source = path  # for messages and the run directory
    return recipe


def path_problems(doc: dict) -> list[str]:
    """The local paths a recipe names that do not exist, each with its dotted key. Works on the raw
    table too, so a recipe with schema problems still has its paths reported."""
    problems = []
    data, model = doc.get("data") or {}, doc.get("model") or {}
    root = data.get("root") if isinstance(data, dict) else None
    if isinstance(root, str) and not Path(root).is_dir():
        from surgeon.data.registry import FILE_ROOT  # formats whose root may be a file (a CSV manifest)

        if data.get("format") not in FILE_ROOT:
            problems.append(f"data.root: {root} is not a directory")
        elif not Path(root).is_file():
            problems.append(f"data.root: {root} is neither a CSV file nor a directory")
    surgery = model.get("surgery") if isinstance(model, dict) else None
    if isinstance(surgery, str) and not Path(surgery).is_dir():
        problems.append(f"model.surgery: {surgery} is not a directory")
    return problems


def model_ref_problem(ref) -> str | None:
    """`model.ref: ...` when the model a recipe names cannot be found (a local path, an alias or Hub id
    in the cache; a Hub id not cached is downloaded, as training would)."""
    if not isinstance(ref, str):
        return None
    from surgeon.refs import resolve

    try:
        resolve(ref)
    except SurgeonError as e:
        return f"model.ref: {e}"
    return None


def check_recipe_paths(recipe, path: Path) -> None:
    """Paths the recipe needs must exist before any work starts."""
    problems = path_problems(recipe.model_dump(mode="json"))
    if problems:
        raise SurgeonError(problems_line(path, problems))


def dump_recipe(recipe) -> str:
    """The fully resolved recipe as TOML (every default spelled out), for the run directory."""
    return to_toml(recipe.model_dump(mode="json", exclude_none=True))


def to_toml(doc: dict) -> str:
    """A small TOML writer for the recipe's shape (tables of scalars, lists and sub-tables)."""
    lines: list[str] = []

    def scalar(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            import json

            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{_key(k)} = {scalar(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    def table(name: str, body: dict) -> None:
        simple = {k: v for k, v in body.items() if not isinstance(v, dict) or not v}
        nested = {k: v for k, v in body.items() if k not in simple}
        if name:
            lines.append(f"[{name}]")
        for k, v in simple.items():
            lines.append(f"{_key(k)} = {scalar(v)}")
        lines.append("")
        for k, v in nested.items():
            table(f"{name}.{_key(k)}" if name else _key(k), v)

    for section, body in doc.items():
        if isinstance(body, list):  # an array of tables: [[method]] (several methods, in order)
            for entry in body:
                lines.append(f"[[{_key(section)}]]")
                lines.extend(f"{_key(k)} = {scalar(v)}" for k, v in entry.items())
                lines.append("")
            continue
        table(section, body)
    return "\n".join(lines).rstrip() + "\n"


def _key(k: str) -> str:
    import re

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else f'"{k}"'
