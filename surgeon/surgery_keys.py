"""How injected modules are named, so any tool can find them from key names alone.

Every module surgeon injects is attached under an attribute named ``surgeon_<method>`` (hyphens
become underscores), optionally followed by ``__<slot>`` when one layer holds several
(``surgeon_bottleneck__ffn``). Its parameters therefore carry that path segment in every checkpoint,
which is how `surgeon inspect` lists the surgery from headers alone and how `strip` finds what to
remove. Methods that add no module (bitfit, linear, full) are known from the surgery record that is
stored as JSON in the safetensors metadata under RECORD_KEY.
"""
from __future__ import annotations

import json
import re
from typing import Mapping

MODULE_PREFIX = "surgeon_"
RECORD_KEY = "surgeon.surgery"
_SEGMENT = re.compile(r"(?:^|\.)surgeon_([a-z0-9]+(?:_[a-z0-9]+)*?)(?:__[a-z0-9_]+)?(?:\.|$)")


def module_attr(method: str, slot: str | None = None) -> str:
    """Attribute name for an injected module of `method` (e.g. 'surgeon_soft_moa__mhsa')."""
    name = MODULE_PREFIX + method.replace("-", "_")
    return f"{name}__{slot}" if slot else name


def method_of_key(key: str) -> str | None:
    """The method whose injected module holds this tensor, or None for a base-model tensor."""
    m = _SEGMENT.search(key)
    return m.group(1).replace("_", "-") if m else None


def find_surgery(numel_by_key: Mapping[str, int], metadata: Mapping[str, str] | None = None) -> list[dict]:
    """[{method, num_parameters}] for every method found in keys or in the surgery record."""
    found: dict[str, int] = {}
    for key, numel in numel_by_key.items():
        method = method_of_key(key)
        if method:
            found[method] = found.get(method, 0) + numel
    record = parse_record(metadata)
    trained: dict[str, int] = {}
    for entry in record.get("methods", []) if record else []:
        name = entry.get("method")
        if name and name not in found:
            found[name] = int(entry.get("num_parameters", 0))
        if name and isinstance(entry.get("petl_parameters"), int):
            trained[name] = entry["petl_parameters"]
    # num_parameters: what the method adds (0 for BitFit, full, linear: they train the model's own);
    # trained_parameters: what it trains, where the record says
    return [{"method": m, "num_parameters": n, **({"trained_parameters": trained[m]} if m in trained else {})}
            for m, n in found.items()]


def parse_record(metadata: Mapping[str, str] | None) -> dict | None:
    raw = (metadata or {}).get(RECORD_KEY)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    check_record(doc, f"the {RECORD_KEY} metadata")
    return doc


def check_record(doc: dict, where: str) -> None:
    """Refuse a surgery record whose structure code would trip over: one line naming the bad part."""
    from surgeon.errors import SurgeonError

    methods = doc.get("methods", [])
    if not isinstance(methods, list):
        raise SurgeonError(f"{where}: `methods` must be a list of {{method, options}} entries, got {methods!r:.80}")
    for i, entry in enumerate(methods):
        if not isinstance(entry, dict) or not isinstance(entry.get("method"), str):
            raise SurgeonError(f"{where}: methods[{i}] must be an object with a `method` name, got {entry!r:.80}")
        if not isinstance(entry.get("options") or {}, dict):
            raise SurgeonError(f"{where}: methods[{i}].options must be an object, got {entry['options']!r:.80}")
    for key in ("base", "config"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise SurgeonError(f"{where}: `{key}` must be an object, got {doc[key]!r:.80}")
