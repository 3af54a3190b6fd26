"""Write a complete model directory: streamed weights, the base's sibling files, a provenance record.

`emit(writer, spec)` produces each tensor in turn (see stream.write_streamed).
The record goes twice: into the safetensors metadata (so it travels with the weights) and as a
pretty-printed JSON file beside them. Call inside `atomic_output`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Iterable

from surgeon.io.checkpoint import Checkpoint
from surgeon.io.writer import TensorSpec
from surgeon.merging.stream import write_streamed

CONFIG_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def write_model_dir(
    tmp: Path,
    base: Checkpoint,
    specs: list[TensorSpec],
    emit: Callable,
    *,
    record: dict,
    record_file: str,
    metadata_key: str,
    drop_metadata: Iterable[str] = (),
    skip_files: Iterable[str] = (),
    dtype: str | None = None,
    max_shard_bytes: int | None = None,
) -> list[Path]:
    metadata = {k: v for k, v in base.metadata.items() if k not in set(drop_metadata)}
    metadata.setdefault("format", "pt")
    metadata[metadata_key] = json.dumps(record, separators=(",", ":"))
    files = write_streamed(tmp, specs, emit, metadata, max_shard_bytes)
    skip = set(skip_files) | {record_file}
    for f in base.sibling_files():
        if f.name not in skip:
            shutil.copy2(f, tmp / f.name)
    config = tmp / "config.json"
    if dtype and config.exists():  # the config names the dtype the weights are stored in
        doc = json.loads(config.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in doc:
                doc[key] = CONFIG_DTYPE_NAMES[dtype]
        config.write_text(json.dumps(doc, indent=2) + "\n")
    (tmp / record_file).write_text(json.dumps(record, indent=2) + "\n")
    return files
