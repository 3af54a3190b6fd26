"""Stream tensors into safetensors files, one tensor in memory at a time.

The header of a safetensors file precedes its data, so the writer takes the full plan (name, dtype,
shape of every tensor) up front, writes the headers, then accepts tensors in plan order. Above
`max_shard_bytes` the checkpoint is split into `model-0000i-of-0000n.safetensors` shards with a
`model.safetensors.index.json`, the layout transformers reads. Call it inside `atomic_output` so
that the files appear only when complete.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from surgeon.errors import SurgeonError
from surgeon.io.kernel_copy import Copier, pwrite_all
from surgeon.io.safetensors_header import DTYPE_SIZES, TensorInfo

DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3  # transformers' default shard size
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

_TORCH_TO_ST = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL",
}


def st_dtype(torch_dtype) -> str:
    """safetensors dtype name of a torch dtype."""
    return _TORCH_TO_ST[str(torch_dtype).removeprefix("torch.")]


def torch_dtype(st: str):
    import torch

    return getattr(torch, {v: k for k, v in _TORCH_TO_ST.items()}[st])


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_SIZES[self.dtype]


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for s in specs:
        if shards[-1] and size + s.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += s.nbytes
    return shards


def _header_bytes(specs: list[TensorSpec], metadata: Mapping[str, str] | None) -> bytes:
    doc: dict = {}
    if metadata:
        doc["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for s in specs:
        doc[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data buffer to 8 bytes, as the reference library does
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(tensor) -> memoryview:
    """The raw little-endian bytes of a CPU tensor, without a copy when it is contiguous."""
    t = tensor.detach().cpu().contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    import torch

    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


class CheckpointWriter:
    """Write a checkpoint into `directory` (an empty folder, normally from atomic_output).

    Tensors arrive in plan order by one of three doors: `write` (a torch tensor), `write_bytes` (raw
    little-endian bytes, e.g. from numpy) or `copy_from` (an unchanged tensor of an input file, copied
    file to file in the kernel; copies of tensors that lie back to back are gathered into one call).
    Every tensor's place in its shard is known from the plan, so bytes are written by offset: the
    copies run on a thread (surgeon.io.kernel_copy) while the caller computes the next tensor."""

    def __init__(
        self,
        directory: str | os.PathLike,
        specs: Iterable[TensorSpec],
        metadata: Mapping[str, str] | None = None,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        filename: str = WEIGHTS_NAME,
    ):
        self.directory = Path(directory)
        self.specs = list(specs)
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise SurgeonError("duplicate tensor names in the output plan")
        self.metadata = dict(metadata or {})
        self.shards = plan_shards(self.specs, max_shard_bytes)
        stem = filename.removesuffix(".safetensors")
        n = len(self.shards)
        self.filenames = [filename] if n == 1 else [f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.index_name = f"{stem}.safetensors.index.json"
        self._order = [(si, s) for si, shard in enumerate(self.shards) for s in shard]
        self._headers = [_header_bytes(shard, self.metadata) for shard in self.shards]
        self._offsets = []  # where each planned tensor's bytes go in its shard
        for si, shard in enumerate(self.shards):
            offset = len(self._headers[si])
            for s in shard:
                self._offsets.append(offset)
                offset += s.nbytes
        self._pos = 0
        self._shard = -1
        self._files = []  # the open shard files: written by offset, closed once every copy is done
        self._pending = None  # [file, begin, end, shard, offset]: a run of input bytes not yet copied
        self._copier = Copier()

    def _open(self, si: int):
        self._shard = si
        self._files.append(open(self.directory / self.filenames[si], "wb", buffering=0))
        pwrite_all(self._files[-1].fileno(), self._headers[si], 0)

    def _flush(self) -> None:
        """Hand the pending run of copied bytes to the copier thread."""
        if self._pending:
            file, begin, end, si, offset = self._pending
            self._pending = None
            if end > begin:
                self._copier.submit(file, begin, end - begin, self._fd(si), offset)

    def _fd(self, si: int) -> int:
        return self._files[si].fileno()  # shards open in order, each once

    def _advance(self, name: str, dtype: str, shape) -> TensorSpec:
        """Check that `name` is the next planned tensor, with this dtype and shape; open its shard."""
        if self._pos >= len(self._order):
            raise SurgeonError(f"tensor {name!r} is not in the output plan")
        si, spec = self._order[self._pos]
        if spec.name != name:
            raise SurgeonError(f"tensors must be written in plan order: expected {spec.name!r}, got {name!r}")
        if (dtype, tuple(shape)) != (spec.dtype, spec.shape):
            raise SurgeonError(f"tensor {name!r}: planned {spec.dtype} {list(spec.shape)}, got {dtype} {list(shape)}")
        if si != self._shard:
            self._open(si)
        self._pos += 1
        return spec

    def write(self, name: str, tensor) -> None:
        self.write_bytes(name, st_dtype(tensor.dtype), tuple(tensor.shape), tensor_bytes(tensor))

    def write_bytes(self, name: str, dtype: str, shape, data) -> None:
        data = memoryview(data).cast("B")
        spec = self._advance(name, dtype, shape)
        if data.nbytes != spec.nbytes:
            raise SurgeonError(f"tensor {name!r}: {data.nbytes} bytes for a planned {spec.nbytes}")
        self._flush()
        pwrite_all(self._fd(self._shard), data, self._offsets[self._pos - 1])

    def copy_from(self, src: TensorInfo, name: str | None = None) -> None:
        """Write the tensor `src` of an input safetensors file unchanged, bit for bit (as `name`)."""
        self._advance(name or src.name, src.dtype, src.shape)
        p = self._pending
        if p and p[0] == src.file and p[2] == src.begin and p[3] == self._shard:
            p[2] = src.end
        else:
            self._flush()
            self._pending = [src.file, src.begin, src.end, self._shard, self._offsets[self._pos - 1]]

    def close(self) -> list[Path]:
        try:
            if self._pos != len(self._order):
                missing = self._order[self._pos][1].name
                raise SurgeonError(f"output incomplete: tensor {missing!r} was never written")
            if not self._order:  # an empty checkpoint is still a valid file
                self._open(0)
            self._flush()
            self._copier.join()  # every copy done (its first error raised here)
        except BaseException:
            self._abandon()
            raise
        self._close_files()
        if len(self.shards) > 1:
            index = {
                "metadata": {"total_size": sum(s.nbytes for s in self.specs), **self.metadata},
                "weight_map": {s.name: self.filenames[si] for si, s in self._order},
            }
            (self.directory / self.index_name).write_text(json.dumps(index, indent=2))
        return [self.directory / f for f in self.filenames]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self._abandon()

    def _abandon(self) -> None:
        """Stop the copies and close the files: the output is incomplete (atomic_output removes it)."""
        self._pending = None
        self._copier.cancel()
        self._close_files()

    def _close_files(self) -> None:
        for f in self._files:
            f.close()
        self._files = []


def write_checkpoint(
    directory: str | os.PathLike,
    specs: Iterable[TensorSpec],
    produce: Callable[[TensorSpec], object],
    metadata: Mapping[str, str] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    filename: str = WEIGHTS_NAME,
) -> list[Path]:
    """Write every planned tensor, asking `produce(spec)` for each in turn (streaming)."""
    writer = CheckpointWriter(directory, specs, metadata, max_shard_bytes, filename)
    with writer:
        for spec in writer.specs:
            writer.write(spec.name, produce(spec))
    return [Path(directory) / f for f in writer.filenames]


def save_state_dict(
    directory: str | os.PathLike,
    state_dict: Mapping[str, object],
    metadata: Mapping[str, str] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    filename: str = WEIGHTS_NAME,
) -> list[Path]:
    """Write an in-memory state dict (tensors sharing storage are written as separate copies)."""
    specs = [TensorSpec(k, st_dtype(t.dtype), tuple(t.shape)) for k, t in state_dict.items()]
    return write_checkpoint(directory, specs, lambda s: state_dict[s.name], metadata, max_shard_bytes, filename)
