"""Which layers to merge and with which lambda: --layers, --layers-from, --layer-map, --lam on the
command line and `layers` / `init_lam` of a recipe, parsed once for every MAM path (file, in-memory,
learnable). `option` names the flag or recipe key that errors quote."""
from __future__ import annotations

import math
from pathlib import Path

from surgeon.errors import SurgeonError


def parse_layers(text: str, num_layers: int, option: str = "--layers") -> list[int]:
    """'12-19', '0,3,5' or a mix ('0-3,8'); ranges are inclusive; returns sorted unique indices."""
    layers: set[int] = set()
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise SurgeonError(f"{option}: {part!r} is not a layer index or a range like 12-19") from None
        if first > last:
            raise SurgeonError(f"{option}: range {part!r} runs backwards")
        check_range([first, last], num_layers, option)  # before expanding: 0-1000000000 took 4 GB
        layers.update(range(first, last + 1))
    if not layers:
        raise SurgeonError(f"{option}: no layers given")
    return check_range(sorted(layers), num_layers, option)


def layer_list(value, num_layers: int, option: str = "--layers") -> list[int]:
    """None or "all" (every layer), a --layers string, or a list of indices -> sorted unique indices."""
    if value is None or value == "all":
        return list(range(num_layers))
    if isinstance(value, str):
        return parse_layers(value, num_layers, option)
    try:
        out = sorted(set(int(i) for i in value))
    except (TypeError, ValueError):
        raise SurgeonError(f"{option}: {value!r} is not a list of layer indices") from None
    if not out:
        raise SurgeonError(f"{option}: no layers given")
    return check_range(out, num_layers, option)


def lam_map(value, layers: list[int], num_target: int, option: str = "--lam") -> dict[int, float]:
    """lam of every merged layer: one number, a --lam string, a list (one per merged layer, ascending,
    or one per target layer) or {layer: value}; each in [0, 1]."""
    if isinstance(value, str):
        return parse_lams(value, layers, num_target, option)
    if isinstance(value, dict):
        given = {int(k): v for k, v in value.items()}
        missing = [i for i in layers if i not in given]
        if missing:
            raise SurgeonError(f"{option}: no value for layer {missing[0]}")
        values = [given[i] for i in layers]
    elif isinstance(value, (int, float)):
        values = [value] * len(layers)
    else:
        values = list(value)
        if len(values) == num_target and len(values) != len(layers):
            values = [values[i] for i in layers]
        elif len(values) != len(layers):
            raise SurgeonError(f"{option}: {len(values)} values for {len(layers)} merged layers")
    return {i: _unit(v, option) for i, v in zip(layers, values)}


def _unit(value, option: str) -> float:
    try:
        lam = float(value)
    except (TypeError, ValueError):
        raise SurgeonError(f"{option}: {value!r} is not a number") from None
    if not math.isfinite(lam) or not 0.0 <= lam <= 1.0:
        raise SurgeonError(f"{option}: {value} is outside [0, 1]")
    return lam


def check_range(layers: list[int], num_layers: int, option: str) -> list[int]:
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise SurgeonError(f"{option}: layer {bad[0]} is out of range (the model has layers 0-{num_layers - 1})")
    return layers


def read_layers_file(path: str | Path, num_layers: int) -> list[int]:
    """A layer selection file: a JSON object with a `layers` list (what `select-layers` writes)."""
    from surgeon.io.checkpoint import read_json

    doc = read_json(Path(path), " (expected a layer selection)")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        raise SurgeonError(f"{path}: `layers` must be a non-empty list of layer indices")
    return check_range(sorted(set(layers)), num_layers, str(path))


def parse_layer_map(text: str, num_source: int, num_target: int) -> dict[int, int]:
    """'S:T,S:T,...' (source layer S merged into target layer T) -> {target layer: source layer}."""
    mapping: dict[int, int] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        s, sep, t = part.partition(":")
        try:
            src, tgt = int(s), int(t)
        except ValueError:
            src = tgt = None
        if not sep or src is None:
            raise SurgeonError(f"--layer-map: {part!r} is not SOURCE:TARGET (e.g. 0:0,1:2)")
        if not 0 <= src < num_source:
            raise SurgeonError(f"--layer-map: source layer {src} is out of range (the source has layers 0-{num_source - 1})")
        if not 0 <= tgt < num_target:
            raise SurgeonError(f"--layer-map: target layer {tgt} is out of range (the target has layers 0-{num_target - 1})")
        if tgt in mapping:
            raise SurgeonError(f"--layer-map: target layer {tgt} appears twice")
        mapping[tgt] = src
    if not mapping:
        raise SurgeonError("--layer-map: no layer pairs given")
    return dict(sorted(mapping.items()))


def parse_lams(text: str | float, layers: list[int], num_target: int, option: str = "--lam") -> dict[int, float]:
    """One lambda for every merged layer, or a list: one per merged layer, or one per target layer."""
    values = [_unit(p, option) for p in (p.strip() for p in str(text).split(",")) if p]
    if not values:
        raise SurgeonError(f"{option}: no value given")
    if len(values) == 1:
        return {i: values[0] for i in layers}
    if len(values) == len(layers):
        return dict(zip(layers, values))
    if len(values) == num_target:
        return {i: values[i] for i in layers}
    raise SurgeonError(
        f"{option}: {len(values)} values given; expected 1, one per merged layer ({len(layers)}) "
        f"or one per target layer ({num_target})"
    )
