"""A checkpoint on disk, read lazily: headers at once, tensors one at a time on request.

Works on a Hugging Face model directory (``config.json`` + ``model.safetensors``, or shards with
``model.safetensors.index.json``), a bare ``.safetensors`` file, or a model reference (see refs.py).
Opening reads only headers, so it is cheap for any size and needs no torch; `get` reads exactly one
tensor's bytes (plain reads, no mmap), so a merge of two large checkpoints holds a tensor of each.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

from surgeon.anatomy import Family, detect_family
from surgeon.errors import SurgeonError
from surgeon.io.pickle_checkpoint import PICKLE_SUFFIXES, is_pickle_path, load_pickle, load_pickle_state_dict, refuse
from surgeon.io.safetensors_header import TensorInfo, read_header
from surgeon.io.writer import INDEX_NAME, WEIGHTS_NAME, st_dtype, torch_dtype

PICKLE_WEIGHTS_NAME = "pytorch_model.bin"  # what save_pretrained wrote before safetensors


def model_roots(model_dir: Path) -> list[Path]:
    """Where the files of a model directory may really live: the directory itself and, for a snapshot
    of the Hugging Face cache (models--org--name/snapshots/REV), that repository (its blobs)."""
    model_dir = Path(model_dir).absolute()
    roots = [model_dir.resolve()]
    parent = model_dir.parent
    if parent.name == "snapshots" and parent.parent.name.startswith("models--"):
        roots.append(parent.parent.resolve())
    return roots


def inside_model(file: Path, model_dir: Path) -> bool:
    """Whether `file`, symlinks resolved, lies inside the model directory (or its cache repository)."""
    real = Path(file).resolve()
    return any(real == r or r in real.parents for r in model_roots(model_dir))


MAX_JSON_BYTES = 64 * 1024**2  # a config, an index or a record: far more than any real one


def read_json(path: Path, what: str = "") -> dict:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise SurgeonError(f"{path}: {path.stat().st_size} bytes is too large for a JSON file{what}")
        doc = json.loads(path.read_text())
    except OSError as e:
        raise SurgeonError(f"{path}: cannot read{what}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SurgeonError(f"{path}: not valid JSON{what} ({e})") from None
    except RecursionError:  # json recurses once per nesting level
        raise SurgeonError(f"{path}: not valid JSON{what} (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise SurgeonError(f"{path}: expected a JSON object{what}")
    return doc


@dataclass
class Checkpoint:
    path: Path  # what the user named (a directory or a file)
    format: str  # "safetensors" | "safetensors-sharded" | "pickle"
    files: list[Path]
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    config: dict | None = None
    _loaded: dict | None = None  # pickle checkpoints are held in memory
    # what an authors' .pt holds besides the state dict ({"cfg": ..., "label_dict": ...}); None for others
    extras: dict | None = None

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, ref: str | os.PathLike, *, allow_pickle: bool = False) -> "Checkpoint":
        from surgeon.refs import resolve

        path = resolve(ref)
        if path.is_dir():
            return cls._open_dir(path, allow_pickle)
        return cls._open_file(path, allow_pickle, config=None)

    @classmethod
    def _open_dir(cls, path: Path, allow_pickle: bool) -> "Checkpoint":
        config = read_json(path / "config.json") if (path / "config.json").exists() else None
        if (path / INDEX_NAME).exists():
            return cls._open_sharded(path, path / INDEX_NAME, config)
        if (path / WEIGHTS_NAME).exists():
            return cls._open_file(path / WEIGHTS_NAME, allow_pickle, config, shown=path)
        # one weights file, or a name that says which: never a silent pick among shards or optimizer states
        singles = sorted(path.glob("*.safetensors"))
        pickles = [path / PICKLE_WEIGHTS_NAME] if (path / PICKLE_WEIGHTS_NAME).is_file() else sorted(
            p for p in path.iterdir() if p.is_file() and is_pickle_path(p))
        for found in (singles, pickles):
            if len(found) == 1:
                return cls._open_file(found[0], allow_pickle, config, shown=path)
            if found:
                names = ", ".join(f.name for f in found[:3]) + (", ..." if len(found) > 3 else "")
                raise SurgeonError(f"{path}: {len(found)} weight files ({names}) and no {WEIGHTS_NAME} or "
                                   f"{INDEX_NAME} to say which make the model; pass the weights file itself")
        raise SurgeonError(f"{path}: no model weights (model.safetensors or {INDEX_NAME}) in this directory")

    @classmethod
    def _open_file(cls, file: Path, allow_pickle: bool, config: dict | None, shown: Path | None = None):
        if is_pickle_path(file):
            if not allow_pickle:
                raise refuse(file)
            from surgeon.beats.checkpoint import authors_extras

            obj = load_pickle(file)
            state = load_pickle_state_dict(file, obj)
            # an authors' BEATs file has no config.json: its cfg is the config, its label_dict kept
            extras = authors_extras(obj)
            if config is None and extras:
                config = extras.get("cfg")
            infos = {
                k: TensorInfo(k, st_dtype(t.dtype), tuple(t.shape), file, 0, t.numel() * t.element_size())
                for k, t in state.items()
            }
            return cls(shown or file, "pickle", [file], infos, {}, config, state, extras)
        if not file.is_file():
            raise SurgeonError(f"{file}: not a file")
        header = read_header(file)
        return cls(shown or file, "safetensors", [file], header.tensors, header.metadata, config)

    @classmethod
    def _open_sharded(cls, path: Path, index_path: Path, config: dict | None) -> "Checkpoint":
        index = read_json(index_path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise SurgeonError(f"{index_path}: no weight_map")
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or not shard:
                raise SurgeonError(f"{index_path}: weight_map[{name!r}] is {shard!r}, not a shard file name")
        tensors: dict[str, TensorInfo] = {}
        metadata: dict[str, str] = {}
        files = []
        for shard in sorted(set(weight_map.values())):
            file = path / shard
            if Path(shard).is_absolute() or ".." in Path(shard).parts or not inside_model(file, path):
                raise SurgeonError(f"{index_path}: shard {shard!r} lies outside the model directory {path}; "
                                   "shards must be files of the model directory")
            if not file.is_file():
                raise SurgeonError(f"{index_path}: shard {shard} is missing")
            header = read_header(file)
            files.append(file)
            metadata.update(header.metadata)
            for name, info in header.tensors.items():
                if weight_map.get(name) != shard:
                    raise SurgeonError(f"{file}: tensor {name!r} is not mapped to this shard in {index_path.name}")
                tensors[name] = info
        missing = [k for k in weight_map if k not in tensors]
        if missing:
            raise SurgeonError(f"{index_path}: {len(missing)} tensors in the index are in no shard (first: {missing[0]})")
        return cls(path, "safetensors-sharded", files, tensors, metadata, config)

    # -- description ----------------------------------------------------------------------------
    @cached_property
    def family(self) -> Family:
        return detect_family(self.config, self.tensors.keys(), source=str(self.path))

    @cached_property
    def _layout(self) -> tuple[str, str] | None:
        return self.family.fit(self.tensors.keys())  # (scheme, prefix) of a complete layer layout

    @cached_property
    def prefix(self) -> str:
        """Text before the layer list in this checkpoint's keys ('bert.' in a task model, '' bare)."""
        if self._layout:
            return self._layout[1]
        p = self.family.prefix_in(self.tensors.keys(), "disk")
        return p if p is not None else (self.family.prefix_in(self.tensors.keys(), "memory") or "")

    @cached_property
    def scheme(self) -> str:
        """Naming scheme of the keys: 'disk' (classic names) or 'memory' (transformers-5 names)."""
        if self._layout:
            return self._layout[0]
        return "disk" if self.family.prefix_in(self.tensors.keys(), "disk") is not None else "memory"

    @cached_property
    def dims(self) -> dict:
        """num_layers, hidden_size, num_heads, intermediate_size (from config, else from shapes)."""
        fam = self.family
        dims = fam.dims(self.config) if self.config else dict.fromkeys(fam.config_keys)
        for name, value in dims.items():
            if value is not None and (type(value) is not int or value < 1):
                raise SurgeonError(f"{self.path}: config.json {fam.config_keys[name]} = {value!r} is not a positive "
                                   "integer")
        keys = self.tensors.keys()
        if dims.get("num_layers") is None:
            dims["num_layers"] = fam.num_layers_in(keys, self.scheme)
        q = self.tensors.get(self.role_key(0, "q"))
        if dims.get("hidden_size") is None and q:
            dims["hidden_size"] = q.shape[0]
        f = self.tensors.get(self.role_key(0, "ffn_in"))
        if dims.get("intermediate_size") is None and f:
            dims["intermediate_size"] = f.shape[0]
        return dims

    def check_config(self) -> None:
        """Refuse a config.json that does not describe these weights, before anything is built from it
        (a config claiming 10^9 layers over 2 took minutes and gigabytes to fail)."""
        if not self.config:
            return
        fam = self.family
        declared = self.dims["num_layers"]
        found = fam.num_layers_in(self.tensors.keys(), self.scheme)
        if found and declared != found:
            raise SurgeonError(f"{self.path}: config.json {fam.config_keys['num_layers']} = {declared} but the "
                               f"weights hold {found} layers; the config does not describe these weights")

    def role_key(self, layer: int, role: str, leaf: str = "weight") -> str:
        return self.family.key(layer, role, leaf, scheme=self.scheme, prefix=self.prefix)

    @cached_property
    def tied_repeats(self) -> set[str]:
        """Keys naming a tensor already listed under another key (Family.tied: BEATs' shared table)."""
        try:
            return self.family.tied_repeats(self.tensors)
        except SurgeonError:  # an unknown family ties nothing
            return set()

    @property
    def num_parameters(self) -> int:
        return sum(t.numel for k, t in self.tensors.items() if t.is_float and k not in self.tied_repeats)

    @property
    def size_bytes(self) -> int:
        return sum(t.nbytes for k, t in self.tensors.items() if k not in self.tied_repeats)

    # -- tensors --------------------------------------------------------------------------------
    def keys(self):
        return self.tensors.keys()

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise SurgeonError(f"{self.path}: no tensor named {name!r}") from None

    def get(self, name: str):
        """Read one tensor into memory: a fresh CPU tensor that owns its bytes (from a pickle: the loaded
        tensor itself, so copy it before changing it in place)."""
        info = self.info(name)
        if self._loaded is not None:
            return self._loaded[name]
        import torch

        dtype = torch_dtype(info.dtype)
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=dtype)
        buf = bytearray(info.nbytes)
        try:
            with open(info.file, "rb", buffering=0) as f:
                f.seek(info.begin)
                got = f.readinto(buf)
        except OSError as e:
            raise SurgeonError(f"{info.file}: cannot read tensor {name!r}: {e.strerror or e}") from None
        if got != info.nbytes:
            raise SurgeonError(f"{info.file}: truncated while reading tensor {name!r}")
        return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)

    def iter_tensors(self, names=None) -> Iterator[tuple[str, object]]:
        for name in names if names is not None else self.tensors:
            yield name, self.get(name)

    def state_dict(self) -> dict:
        """Every tensor in memory (for small models and tests; large jobs should stream)."""
        return dict(self.iter_tensors())

    def sibling_files(self) -> list[Path]:
        """Non-weight files of a model directory (config, tokenizer, feature extractor...), for copying.
        A file that is a link to outside the model (outside its Hugging Face cache repository) is refused."""
        if not self.path.is_dir():
            return []
        weights = {f.name for f in self.files} | {INDEX_NAME}
        found = [
            p for p in sorted(self.path.iterdir())
            if p.is_file() and p.name not in weights and not p.name.endswith(PICKLE_SUFFIXES)
            and not p.name.endswith(".safetensors")
        ]
        for p in found:
            if not inside_model(p, self.path):
                raise SurgeonError(f"{p}: links to {p.resolve()}, outside the model directory {self.path}; "
                                   "refusing to copy it into the output (copy the file into the model instead)")
        return found
