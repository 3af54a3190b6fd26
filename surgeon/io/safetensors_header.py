"""Read and validate safetensors headers in pure Python (no torch, no tensor data).

A file is: 8-byte little-endian header length N, N bytes of JSON, then the data buffer. The JSON maps
tensor name -> {dtype, shape, data_offsets [begin, end)} (offsets relative to the buffer) plus an
optional ``__metadata__`` map of strings. Everything `surgeon inspect` shows comes from here.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from surgeon.errors import SurgeonError

# bytes per element
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
MAX_HEADER_BYTES = 100_000_000  # the reference library's cap


@dataclass(frozen=True, slots=True)  # slots: a 60 MB header holds 550,000 of them
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    begin: int  # absolute byte offset in `file`
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


@dataclass(frozen=True)
class Header:
    file: Path
    tensors: dict[str, TensorInfo]  # in file order
    metadata: dict[str, str]
    data_start: int
    file_size: int


MAX_DIM = 2**64 - 1  # the reference library reads sizes as unsigned 64-bit integers


def _no_duplicates(pairs):
    seen = dict(pairs)  # in C: a Python loop here made a 60 MB header take 20 s
    if len(seen) != len(pairs):
        names = set()
        for k, _ in pairs:
            if k in names:
                raise SurgeonError(f"duplicate tensor name {k!r} in the header")
            names.add(k)
    return seen


def _parse(raw: bytes) -> dict:
    """The header's JSON. Fast path without a hook (a hook called per object doubled the time of a
    60 MB header): a duplicate tensor name shows as fewer names than `"data_offsets"` keys, and only
    then is the header parsed again to name the duplicate."""
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text)
        if isinstance(doc, dict) and len(doc) - ("__metadata__" in doc) != text.count('"data_offsets"'):
            json.loads(text, object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested too deeply
        raise SurgeonError(f"not a safetensors file: header is not valid JSON ({e.__class__.__name__})") from None
    return doc


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def read_header(path: str | os.PathLike) -> Header:
    """Parse and fully validate one safetensors file's header.

    Checks: sane header length, valid JSON, known dtypes, integer shapes, offsets inside the buffer,
    byte length = numel x dtype size, contiguous non-overlapping tensors covering the buffer, no
    duplicate names. Raises SurgeonError naming the file and the problem."""
    path = Path(path)
    try:
        return _read_header(path)
    except SurgeonError as e:
        msg = str(e)
        raise SurgeonError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def _read_header(path: Path) -> Header:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SurgeonError("not a safetensors file (shorter than its 8-byte header length)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or n > size - 8:
                raise SurgeonError(
                    f"not a safetensors file or truncated: header length {n} bytes "
                    f"{'exceeds the 100 MB cap' if n > MAX_HEADER_BYTES else f'but the file has {size} bytes'}"
                )
            raw = f.read(n)
    except OSError as e:
        raise SurgeonError(f"cannot read: {e.strerror or e}") from None
    doc = _parse(raw)
    del raw
    if not isinstance(doc, dict):
        raise SurgeonError("not a safetensors file: header is not a JSON object")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SurgeonError("__metadata__ must map strings to strings")
    data_start = 8 + n
    buffer = size - data_start
    tensors: dict[str, TensorInfo] = {}
    sizes = DTYPE_SIZES
    for name in list(doc):
        entry = doc.pop(name)  # each parsed entry freed as its TensorInfo is made: half the peak memory
        if not isinstance(entry, dict) or {"dtype", "shape", "data_offsets"} - entry.keys():
            raise SurgeonError(f"tensor {name!r}: entry lacks dtype, shape or data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in sizes:
            raise SurgeonError(f"tensor {name!r}: unknown dtype {_short(dtype)}")
        if type(shape) is not list or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape):
            raise SurgeonError(f"tensor {name!r}: shape {_short(shape)} is not a list of sizes (integers 0 to 2^64-1)")
        expected = math.prod(shape) * sizes[dtype]
        if expected > MAX_DIM:
            raise SurgeonError(f"tensor {name!r}: shape {_short(shape)} has more bytes than 2^64")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise SurgeonError(f"tensor {name!r}: data_offsets {_short(offsets)} is not [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end <= buffer:
            raise SurgeonError(
                f"tensor {name!r}: data_offsets [{begin}, {end}) lie outside the {buffer}-byte data buffer "
                "(file truncated or header corrupt)"
            )
        if end - begin != expected:
            raise SurgeonError(
                f"tensor {name!r}: {end - begin} bytes for shape {shape} {dtype}, which needs {expected}"
            )
        tensors[name] = TensorInfo(name, dtype, tuple(shape), path, data_start + begin, data_start + end)
    # contiguous, non-overlapping, covering the buffer
    cursor = 0
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        rel_begin, rel_end = t.begin - data_start, t.end - data_start
        if rel_begin < cursor:
            raise SurgeonError(f"tensor {t.name!r} overlaps the tensor before it (offset {rel_begin} < {cursor})")
        if rel_begin > cursor:
            raise SurgeonError(f"gap of {rel_begin - cursor} bytes before tensor {t.name!r} at offset {cursor}")
        cursor = rel_end
    if cursor != buffer:
        raise SurgeonError(f"data buffer has {buffer} bytes but the tensors account for {cursor}")
    return Header(path, tensors, metadata, data_start, size)
