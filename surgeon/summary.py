"""What is in a checkpoint, from its headers alone (the engine of `surgeon inspect`).

No torch and no transformers are imported here: a summary of a 1.3 GB checkpoint reads a few
kilobytes of JSON.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from surgeon.anatomy import layout_note
from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint
from surgeon.io.writer import INDEX_NAME
from surgeon.surgery_keys import find_surgery, parse_record

_INDEX_SEGMENT = re.compile(r"(?<=\.)(\d+)(?=\.)")


def layer_label(indices) -> str:
    """The layers of a collapsed name, written one way in every table: 3, {0..11} or {0,3,5}."""
    indices = sorted(set(indices))
    if len(indices) == 1:
        return str(indices[0])
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"{{{indices[0]}..{indices[-1]}}}"
    return "{" + ",".join(map(str, indices)) + "}"


def collapse_keys(tensors) -> list[dict]:
    """Group keys that differ only in one numeric path segment (the layer index) and share shape and
    dtype: 'encoder.layer.{0..11}.attention.self.query.weight x12 [768, 768] F32'."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    singles = []
    for t in tensors.values():
        m = _INDEX_SEGMENT.search(t.name)
        if not m:
            singles.append({"name": t.name, "count": 1, "shape": list(t.shape), "dtype": t.dtype})
            continue
        template = t.name[: m.start()] + "{}" + t.name[m.end():]
        groups[(template, t.shape, t.dtype)].append(int(m.group(1)))
    rows = list(singles)
    for (template, shape, dtype), indices in groups.items():
        indices.sort()
        label = layer_label(indices)
        rows.append({"name": template.replace("{}", label), "count": len(indices), "shape": list(shape), "dtype": dtype})
    rows.sort(key=lambda r: _natural(r["name"]))
    return rows


def _natural(s: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def summarize(ckpt: Checkpoint) -> dict:
    """The JSON that `surgeon inspect --json` prints."""
    record = parse_record(ckpt.metadata)
    if ckpt.config is None and record and isinstance(record.get("config"), dict):
        ckpt.config = record["config"]  # an adapter-only save: describe the model it applies to
    try:
        family = ckpt.family
    except SurgeonError:
        if ckpt.config or ckpt.tensors:
            raise
        family = None
    dims = ckpt.dims if family else {}
    dtypes: dict[str, int] = defaultdict(int)
    dtype_bytes: dict[str, int] = defaultdict(int)
    dtype_tensors: dict[str, int] = defaultdict(int)
    tied = ckpt.tied_repeats if family else set()
    for k, t in ckpt.tensors.items():
        dtype_tensors[t.dtype] += 1
        if k in tied:  # one tensor under several keys (BEATs' table): its elements count once
            continue
        dtypes[t.dtype] += t.numel
        dtype_bytes[t.dtype] += t.nbytes
    files = ckpt.files
    file_size = sum(f.stat().st_size for f in files)
    if ckpt.format == "safetensors-sharded":
        file_size += (Path(ckpt.path) / INDEX_NAME).stat().st_size
    return {
        "path": str(ckpt.path),
        "format": ckpt.format,
        "family": family.name if family else None,
        "model_type": (ckpt.config or {}).get("model_type"),
        # set when the family was found by the keys' layout, the model_type being unknown
        "layout": layout_note(family, ckpt.config) if family else None,
        "modality": family.modality if family else None,
        "key_scheme": ckpt.scheme if family else None,
        "prefix": ckpt.prefix if family else None,
        "architectures": (ckpt.config or {}).get("architectures"),
        "num_layers": dims.get("num_layers"),
        "hidden_size": dims.get("hidden_size"),
        "num_heads": dims.get("num_heads"),
        "intermediate_size": dims.get("intermediate_size"),
        "num_parameters": ckpt.num_parameters,
        "num_tensors": len(ckpt.tensors),
        "tied_keys": len(tied),  # keys repeating a tensor listed under another key (not counted again)
        "dtypes": dict(dtypes),
        "dtype_bytes": dict(dtype_bytes),
        "dtype_tensors": dict(dtype_tensors),
        "size_bytes": ckpt.size_bytes,
        "file_size_bytes": file_size,
        "shards": [f.name for f in files],
        "metadata": ckpt.metadata,
        "surgery": find_surgery({k: t.numel for k, t in ckpt.tensors.items()}, ckpt.metadata),
        "surgery_base": (record or {}).get("base"),
        "tensors": collapse_keys(ckpt.tensors),
    }


def check(ckpt: Checkpoint) -> list[str]:
    """Integrity checks for `inspect --check`; returns the list of checks passed.

    Opening a checkpoint already validated every header (length, JSON, offsets inside the buffer,
    contiguity, byte lengths, duplicates, tensors covering the file to its last byte) and a sharded index
    against its shards; this validates each header again, to catch a file that changed or was cut since."""
    from surgeon.io.safetensors_header import read_header

    passed = []
    if ckpt.format == "pickle":
        return ["pickle loaded with weights_only=True"]
    for f in ckpt.files:
        h = read_header(f)
        passed.append(f"{f.name}: header valid, {len(h.tensors)} tensors contiguous, {h.file_size} bytes accounted for")
    if ckpt.format == "safetensors-sharded":
        passed.append(f"{INDEX_NAME}: consistent with {len(ckpt.files)} shards")
    return passed
