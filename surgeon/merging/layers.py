"""Which layers to merge and with which lambda: parsing of --layers, --layers-from, --layer-map, --lam."""
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


def parse_lams(text: str | float, layers: list[int], num_target: int) -> dict[int, float]:
    """One lambda for every merged layer, or a list: one per merged layer, or one per target layer."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    values = []
    for p in parts:
        try:
            lam = float(p)
        except ValueError:
            raise SurgeonError(f"--lam: {p!r} is not a number") from None
        if not math.isfinite(lam) or not 0.0 <= lam <= 1.0:
            raise SurgeonError(f"--lam: {p} is outside [0, 1]")
        values.append(lam)
    if not values:
        raise SurgeonError("--lam: no value given")
    if len(values) == 1:
        return {i: values[0] for i in layers}
    if len(values) == len(layers):
        return dict(zip(layers, values))
    if len(values) == num_target:
        return {i: values[i] for i in layers}
    raise SurgeonError(
        f"--lam: {len(values)} values given; expected 1, one per merged layer ({len(layers)}) "
        f"or one per target layer ({num_target})"
    )
