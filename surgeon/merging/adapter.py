"""LoRA adapters as surgeon folds them, whatever file format they came in.

An `Adapter` lists LoRA pairs (the adapted Linear's module path, the keys of A [r, in] and B [out, r],
the scaling) and full tensors that replace base tensors (a trained head, PEFT's modules_to_save,
unfrozen biases). This module reads surgeon's own format (`surgeon inject lora --out DIR`:
adapter.safetensors keyed by in-memory names + surgery.json; or a `--full` model directory with the
LoRA inside); peft_format.py reads PEFT directories into the same shape.
"""
from __future__ import annotations

import math

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from surgeon.api import ADAPTER_NAME as ADAPTER_FILE  # the names save_surgery writes
from surgeon.api import RECORD_NAME as RECORD_FILE
from surgeon.api import read_record
from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint, read_json
from surgeon.surgery_keys import RECORD_KEY, method_of_key, parse_record

_LORA_KEY = re.compile(r"^(?P<module>.+)\.surgeon_lora(?:__[a-z0-9_]+)?\.(?P<which>lora_[AB])$")


@dataclass(frozen=True)
class LoraPair:
    module: str  # module path of the adapted Linear, as the adapter names it
    a_key: str  # tensor names in Adapter.weights
    b_key: str
    scaling: float
    rank: int
    fan_in_fan_out: bool = False  # PEFT: the base weight is stored [in, out]


@dataclass
class Adapter:
    kind: str  # "surgeon" | "peft"
    path: Path
    weights: Checkpoint  # the adapter's tensors (for an embedded surgery: the model checkpoint itself)
    pairs: list[LoraPair]
    full: dict[str, str] = field(default_factory=dict)  # base parameter path -> key in weights
    scheme: str = "memory"  # naming of the paths (in-memory names unless embedded in a saved model)
    base_ref: Optional[str] = None
    base_fingerprint: Optional[str] = None
    family: Optional[str] = None
    embedded: bool = False
    config: dict = field(default_factory=dict)  # PEFT adapter_config.json / surgeon record

    def lora_keys(self) -> set[str]:
        return {k for p in self.pairs for k in (p.a_key, p.b_key)}


def has_embedded_lora(ckpt: Checkpoint) -> bool:
    return any(method_of_key(k) == "lora" for k in ckpt.keys())


def read_adapter(path: str | Path, allow_pickle: bool = False) -> Adapter:
    """A surgeon adapter directory or a PEFT adapter directory."""
    from surgeon.refs import resolve

    path = resolve(path)
    if path.is_dir() and (path / "adapter_config.json").exists():
        from surgeon.merging.peft_format import read_peft

        return read_peft(path, allow_pickle)
    if path.is_dir() and (path / ADAPTER_FILE).exists():
        return read_surgeon(path)
    if path.is_dir():
        ckpt = Checkpoint.open(path, allow_pickle=allow_pickle)
        if has_embedded_lora(ckpt):
            return read_embedded(ckpt)
    raise SurgeonError(
        f"{path}: not a LoRA adapter (no {ADAPTER_FILE}, no adapter_config.json, no surgeon_lora tensors)"
    )


def read_surgeon(path: Path) -> Adapter:
    weights = Checkpoint.open(path / ADAPTER_FILE)
    record = read_record(path)
    if not record:
        raise SurgeonError(f"{path}: no surgery record ({RECORD_FILE} or '{RECORD_KEY}' in the metadata)")
    pairs, full = _collect(weights, record, path)
    base = record.get("base") or {}
    return Adapter("surgeon", path, weights, pairs, full, "memory", base.get("ref") or base.get("path"),
                   base.get("fingerprint"), base.get("family"), config=record)


def read_embedded(ckpt: Checkpoint) -> Adapter:
    """A model checkpoint carrying its own LoRA (surgeon inject --full): fold it into itself."""
    if not has_embedded_lora(ckpt):
        raise SurgeonError(f"{ckpt.path}: carries no LoRA (no surgeon_lora tensors); pass the adapter with --adapter")
    record = parse_record(ckpt.metadata)
    if record is None and ckpt.path.is_dir() and (ckpt.path / RECORD_FILE).exists():
        record = read_json(ckpt.path / RECORD_FILE)
    if not record:
        raise SurgeonError(f"{ckpt.path}: has LoRA tensors but no surgery record giving their scaling")
    pairs, _ = _collect(ckpt, record, ckpt.path, embedded=True)
    base = record.get("base") or {}
    return Adapter("surgeon", ckpt.path, ckpt, pairs, {}, ckpt.scheme, base.get("ref") or base.get("path"),
                   None, ckpt.family.name, embedded=True, config=record)


def lora_scaling(record: dict, where: Path) -> float:
    for entry in record.get("methods", []):
        if entry.get("method") == "lora":
            options = entry.get("options") or {}
            if "scaling" in options:
                value = options["scaling"]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise SurgeonError(f"{where}: the LoRA scaling of the surgery record is {value!r}, "
                                       "not a finite number")
                return float(value)
            raise SurgeonError(f"{where}: the LoRA entry of the surgery record has no `scaling`")
    raise SurgeonError(f"{where}: the surgery record has no LoRA method")


def _collect(weights: Checkpoint, record: dict, where: Path, embedded: bool = False):
    halves: dict[str, dict[str, str]] = {}
    full: dict[str, str] = {}
    for key in weights.keys():
        method = method_of_key(key)
        if method is None:
            full[key] = key
        elif method == "lora":
            m = _LORA_KEY.match(key)
            if not m:
                raise SurgeonError(f"{where}: unexpected LoRA tensor {key!r} (expected <module>.surgeon_lora.lora_A/B)")
            halves.setdefault(m["module"], {})[m["which"]] = key
        else:
            raise SurgeonError(f"{where}: holds {method} modules ({key}), which cannot be folded into the weights; only LoRA can")
    if not halves:
        raise SurgeonError(f"{where}: no LoRA tensors to fold")
    scaling = lora_scaling(record, where)
    pairs = []
    for module, ab in halves.items():
        if set(ab) != {"lora_A", "lora_B"}:
            raise SurgeonError(f"{where}: {module} has only {', '.join(ab)}; LoRA needs both lora_A and lora_B")
        pairs.append(LoraPair(module, ab["lora_A"], ab["lora_B"], scaling, weights.info(ab["lora_A"]).shape[0]))
    return pairs, full
