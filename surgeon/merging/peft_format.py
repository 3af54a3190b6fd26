"""PEFT adapter directories: read them into an `Adapter`, write surgeon's LoRA as one.

Format (peft 0.x): adapter_config.json + adapter_model.safetensors with keys
`base_model.model.<module path>.lora_A.weight` [r, in] / `.lora_B.weight` [out, r], module paths being
the in-memory names of the wrapped transformers model, plus full tensors of `modules_to_save`.
Per-module rank and alpha follow PEFT's own pattern rule (`get_pattern_key`): a pattern matches a
module path when the path ends with it after a dot.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint, read_json
from surgeon.merging.adapter import Adapter, LoraPair

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
PREFIX = "base_model.model."
_SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B"}


PATTERN_TIMEOUT_S = 1.0  # one module against one pattern; a backtracking pattern like (a|aa)+b never ends


def pattern_value(patterns: dict, module: str, default, what: str = "rank_pattern"):
    """PEFT's rank_pattern/alpha_pattern lookup: the first pattern p that matches the module name whole
    or as a suffix after a dot (re.match(rf'(.*\\.)?({p})$', module)), each match bounded in time (the
    `regex` library's timeout; transformers already depends on it)."""
    import regex

    if patterns is not None and not isinstance(patterns, dict):
        raise SurgeonError(f"{CONFIG_FILE}: {what} must map module patterns to values, got {patterns!r}")
    for pattern, value in (patterns or {}).items():
        try:
            if regex.match(rf"(.*\.)?({pattern})$", module, timeout=PATTERN_TIMEOUT_S):
                return value
        except regex.error as e:
            raise SurgeonError(f"{CONFIG_FILE}: {what} pattern {pattern!r} is not a regular expression ({e})") from None
        except TimeoutError:
            raise SurgeonError(f"{CONFIG_FILE}: {what} pattern {pattern!r} takes too long to match {module!r} "
                               "(catastrophic backtracking); simplify it") from None
    return default


def _number(value, what: str, kind=float, positive: bool = True):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and kind is int:
        ok = float(value).is_integer()
    if not ok or (positive and value <= 0):
        wanted = ("a positive " if positive else "a finite ") + ("integer" if kind is int else "number")
        raise SurgeonError(f"{CONFIG_FILE}: {what} = {value!r} is not {wanted}")
    return kind(value)


def peft_scaling(config: dict, module: str) -> tuple[int, float]:
    r = _number(pattern_value(config.get("rank_pattern"), module, config.get("r", 8)), f"r of {module}", int)
    alpha = _number(pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8), "alpha_pattern"),
                    f"lora_alpha of {module}", positive=False)
    return r, alpha / (math.sqrt(r) if config.get("use_rslora") else r)


def read_peft(path: Path, allow_pickle: bool = False) -> Adapter:
    config = read_json(path / CONFIG_FILE)
    kind = config.get("peft_type")
    if kind != "LORA":
        raise SurgeonError(f"{path / CONFIG_FILE}: peft_type {kind!r}; only LORA adapters can be folded")
    if config.get("use_dora"):
        raise SurgeonError(f"{path / CONFIG_FILE}: DoRA adapter (use_dora); its merge is not W + scaling * B @ A, fold it with peft")
    if config.get("lora_bias"):
        raise SurgeonError(f"{path / CONFIG_FILE}: lora_bias adapters are not supported")
    file = path / WEIGHTS_FILE if (path / WEIGHTS_FILE).exists() else path / PICKLE_FILE
    if not file.exists():
        raise SurgeonError(f"{path}: no {WEIGHTS_FILE}")
    weights = Checkpoint.open(file, allow_pickle=allow_pickle)
    halves: dict[str, dict[str, str]] = {}
    full: dict[str, str] = {}
    for key in weights.keys():
        if not key.startswith(PREFIX):
            raise SurgeonError(f"{file}: key {key!r} does not start with {PREFIX!r}")
        name = key[len(PREFIX):]
        if "lora_magnitude_vector" in name:
            raise SurgeonError(f"{file}: DoRA magnitude vectors ({name}); fold DoRA adapters with peft")
        if "lora_embedding_" in name:
            raise SurgeonError(f"{file}: LoRA on an embedding ({name}) is not supported")
        suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
        if suffix:
            halves.setdefault(name[: -len(suffix)], {})[_SUFFIXES[suffix]] = key
        else:
            full[name] = key
    pairs = []
    for module, ab in halves.items():
        if set(ab) != {"A", "B"}:
            raise SurgeonError(f"{file}: {module} lacks lora_{'B' if 'A' in ab else 'A'}")
        a = weights.info(ab["A"])
        if len(a.shape) != 2:
            raise SurgeonError(f"{file}: {module} is not a Linear LoRA (lora_A shape {list(a.shape)})")
        r, scaling = peft_scaling(config, module)
        if a.shape[0] != r:
            raise SurgeonError(f"{file}: {module} has rank {a.shape[0]} but {CONFIG_FILE} says r = {r}")
        pairs.append(LoraPair(module, ab["A"], ab["B"], scaling, r, bool(config.get("fan_in_fan_out"))))
    if not pairs:
        raise SurgeonError(f"{file}: no LoRA tensors")
    return Adapter("peft", path, weights, pairs, full, "memory", config.get("base_model_name_or_path"), config=config)


def memory_key(family, key: str) -> str:
    """In-memory name of `key`, which may use disk names (LoRA embedded in a saved model)."""
    if family is not None and family.parse(key, "disk") and not family.parse(key, "memory"):
        return family.translate(key, "disk", "memory")
    return key


def peft_config_for(adapter: Adapter, modules: dict[str, LoraPair], full_modules: list[str]) -> dict:
    """adapter_config.json reproducing each module's rank and scaling (alpha = scaling * r)."""
    ranks = [p.rank for p in modules.values()]
    r = max(set(ranks), key=ranks.count)
    alphas = {m: p.scaling * p.rank for m, p in modules.items()}
    alpha = next(a for m, a in alphas.items() if modules[m].rank == r)  # of the first module at the common rank
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": adapter.base_ref,
        "r": r,
        "lora_alpha": alpha,
        "target_modules": sorted(modules),
        "rank_pattern": {m: p.rank for m, p in modules.items() if p.rank != r},
        "alpha_pattern": {m: a for m, a in alphas.items() if a != alpha},
        "lora_dropout": 0.0,
        "fan_in_fan_out": False,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": full_modules or None,
        "init_lora_weights": True,
        "inference_mode": True,
    }


def _module_rest(adapter: Adapter, full: dict, full_modules: list[str]) -> dict:
    """PEFT saves and loads a module of modules_to_save whole; when the adapter trained only some of a
    module's tensors (a head's weight but not its bias), take the rest from the recorded base."""
    base_ref = (adapter.config.get("base") or {}).get("path") or adapter.base_ref
    if not full_modules or not base_ref:
        return {}
    try:
        base = Checkpoint.open(base_ref)
    except SurgeonError:
        return {}
    rest = {}
    for key in base.keys():
        name = base.family.translate(key, base.scheme, "memory")
        if name not in full and any(name.startswith(m + ".") for m in full_modules):
            rest[name] = base.get(key).contiguous()
    return rest


def write_peft(adapter: Adapter, out: str | Path, *, force: bool = False) -> Path:
    """Write surgeon's LoRA as a PEFT adapter directory (atomically)."""
    from surgeon.anatomy import get_family
    from surgeon.io.atomic import atomic_output
    from surgeon.io.writer import save_state_dict

    if adapter.kind != "surgeon":
        raise SurgeonError(f"{adapter.path}: already a PEFT adapter")
    family = get_family(adapter.family) if adapter.family else None
    modules = {memory_key(family, p.module + ".weight").removesuffix(".weight"): p for p in adapter.pairs}
    full = {memory_key(family, k): v for k, v in adapter.full.items()}
    full_modules = sorted({k.rsplit(".", 1)[0] for k in full})
    clash = [m for m in full_modules if m in modules]
    if clash:
        raise SurgeonError(f"{adapter.path}: {clash[0]} has LoRA and is also trained in full; PEFT cannot express that")
    state = {}
    for name, tensor in _module_rest(adapter, full, full_modules).items():
        state[PREFIX + name] = tensor
    for module, pair in sorted(modules.items()):
        state[f"{PREFIX}{module}.lora_A.weight"] = adapter.weights.get(pair.a_key).contiguous()
        state[f"{PREFIX}{module}.lora_B.weight"] = adapter.weights.get(pair.b_key).contiguous()
    for name, key in sorted(full.items()):
        state[PREFIX + name] = adapter.weights.get(key).contiguous()
    config = peft_config_for(adapter, modules, full_modules)
    with atomic_output(out, force=force, inputs=[adapter.path]) as tmp:
        save_state_dict(tmp, state, {"format": "pt"}, filename=WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return Path(out)
