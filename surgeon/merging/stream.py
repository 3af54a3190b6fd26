"""Tensor streaming without torch: numpy reads, float32 arithmetic, raw byte copies.

`import torch` alone costs this process about 0.7 GB of RSS and seconds of start-up, more than the
whole streaming merge needs, so merges compute in numpy. Tensors read from the `Checkpoint`'s header
offsets (the same bytes `Checkpoint.get` reads); untouched tensors go from input file to output file
with `os.copy_file_range` (in the kernel, never through Python). torch is imported only for what numpy
cannot hold (bfloat16, float8, pickled checkpoints), to convert at the edges.

Writing goes through surgeon's `CheckpointWriter` (`write_bytes` and `copy_from`).
"""
from __future__ import annotations

import numpy as np

from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint
from surgeon.io.writer import CheckpointWriter, TensorSpec

# safetensors dtype -> numpy dtype (little-endian); the others (BF16, F8_*) need torch to convert
NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}


def raw_readable(ckpt: Checkpoint) -> bool:
    """Whether tensors can be read (or copied) straight from the file bytes (not a loaded pickle)."""
    return ckpt.format != "pickle"


def read_array(ckpt: Checkpoint, name: str) -> np.ndarray:
    """One tensor as a numpy array in its stored dtype (numpy dtypes only)."""
    info = ckpt.info(name)
    if not raw_readable(ckpt):  # a copy: callers may update the array in place
        return ckpt.get(name).numpy().copy()
    arr = np.empty(info.shape, dtype=NUMPY_DTYPES[info.dtype])
    try:
        with open(info.file, "rb", buffering=0) as f:
            f.seek(info.begin)
            got = f.readinto(memoryview(arr.reshape(-1)).cast("B")) if info.nbytes else 0
    except OSError as e:
        raise SurgeonError(f"{info.file}: cannot read tensor {name!r}: {e.strerror or e}") from None
    if got != info.nbytes:
        raise SurgeonError(f"{info.file}: truncated while reading tensor {name!r}")
    return arr


_MAPS: dict = {}  # file -> (mmap, size at mapping): one read-only map per input file, kept for the process


def mapped_array(ckpt: Checkpoint, name: str):
    """A read-only numpy view of a tensor straight from the mapped file (no read copy), or None where
    the bytes cannot be mapped (a loaded pickle, an unaligned offset, a file that changed)."""
    import mmap
    import os

    info = ckpt.info(name)
    if not raw_readable(ckpt) or info.dtype not in NUMPY_DTYPES or not info.nbytes:
        return None
    itemsize = np.dtype(NUMPY_DTYPES[info.dtype]).itemsize
    if info.begin % itemsize:
        return None
    key = str(info.file)
    try:
        size = os.path.getsize(key)
        entry = _MAPS.get(key)
        if entry is None or entry[1] != size:
            with open(key, "rb") as f:
                entry = _MAPS[key] = (mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), size)
    except (OSError, ValueError):
        return None
    if info.begin + info.nbytes > entry[1]:
        raise SurgeonError(f"{info.file}: truncated while reading tensor {name!r}")
    arr = np.frombuffer(entry[0], dtype=NUMPY_DTYPES[info.dtype], count=info.numel, offset=info.begin)
    return arr.reshape(info.shape)


def release_view(ckpt: Checkpoint, name: str) -> None:
    """Drop the process's mapping of a tensor's pages once it is used (MADV_DONTNEED): they stay in the
    page cache but leave this process's RSS, so memory stays at a few tensors."""
    import mmap

    info = ckpt.info(name)
    entry = _MAPS.get(str(info.file))
    if entry is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = info.begin - info.begin % mmap.PAGESIZE
    end = min(info.begin + info.nbytes, entry[1])
    try:
        entry[0].madvise(mmap.MADV_DONTNEED, start, end - start)
    except (OSError, ValueError):
        pass


def read_float32(ckpt: Checkpoint, name: str, *, view: bool = False) -> np.ndarray:
    """One tensor converted to float32 (through torch only for bfloat16/float8). view=True may return a
    read-only view of the mapped file (float32 tensors): the caller must not write into it."""
    info = ckpt.info(name)
    if view:
        arr = mapped_array(ckpt, name)
        if arr is not None:
            return arr.astype(np.float32, copy=False)
    if info.dtype in NUMPY_DTYPES:
        return read_array(ckpt, name).astype(np.float32, copy=False)
    import torch

    return ckpt.get(name).to(torch.float32).numpy()


def to_bytes(array: np.ndarray, dtype: str) -> memoryview:
    """The little-endian bytes of a float32 array cast to safetensors dtype `dtype` (cast once)."""
    if dtype in NUMPY_DTYPES:
        out = np.ascontiguousarray(array.astype(NUMPY_DTYPES[dtype], copy=False))
        return memoryview(out.reshape(-1)).cast("B")
    import torch

    from surgeon.io.writer import tensor_bytes, torch_dtype

    return tensor_bytes(torch.from_numpy(np.ascontiguousarray(array)).to(torch_dtype(dtype)))


def copy_tensor(writer: CheckpointWriter, spec: TensorSpec, ckpt: Checkpoint, name: str, raw: bool) -> None:
    """Write a checkpoint tensor unchanged, bit for bit."""
    if raw:
        writer.copy_from(ckpt.info(name), spec.name)
    else:  # a loaded pickle: its tensors are torch tensors already
        writer.write(spec.name, ckpt.get(name))


def put(writer: CheckpointWriter, spec: TensorSpec, data) -> None:
    """Write computed bytes for `spec`."""
    writer.write_bytes(spec.name, spec.dtype, spec.shape, data)


def write_streamed(directory, specs: list[TensorSpec], emit, metadata=None, max_shard_bytes=None) -> list:
    """Write every planned tensor; `emit(writer, spec)` writes it once (put or copy_tensor). Shards of at
    most `max_shard_bytes` (None: transformers' 5 GiB)."""
    from surgeon.io.writer import DEFAULT_MAX_SHARD_BYTES

    writer = CheckpointWriter(directory, specs, metadata, max_shard_bytes=max_shard_bytes or DEFAULT_MAX_SHARD_BYTES)
    with writer:
        for spec in writer.specs:
            emit(writer, spec)
    return [writer.directory / f for f in writer.filenames]
