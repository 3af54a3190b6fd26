"""Loading transformers models and finding anatomy roles in them (imports torch and transformers)."""
from __future__ import annotations

import os
from pathlib import Path

from surgeon.anatomy import Family, family_by_layout_type, family_by_type, family_from_keys
from surgeon.errors import SurgeonError


def quiet_transformers() -> None:
    """No progress bars or advisory warnings from transformers on surgeon's output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def model_class_for(config) -> type:
    """The transformers class named in config.architectures, else the family's base model class."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return transformers.AutoModel._model_mapping[type(config)]


def load_pretrained(ref: str | os.PathLike, model_class: type | str | None = None, **kwargs):
    """Load a model directory (or reference) with transformers, safetensors only, in eval mode."""
    import transformers

    from surgeon.io.checkpoint import Checkpoint
    from surgeon.refs import resolve

    quiet_transformers()
    path = resolve(ref)
    loader = _family_loader(path)
    if loader is not None:  # a family that transformers does not implement loads its own way
        return loader(path, model_class=model_class, **kwargs).eval()
    if not path.is_dir():
        raise SurgeonError(f"{path}: loading a model needs a model directory with config.json")
    ckpt = Checkpoint.open(path)  # validates headers and refuses pickles before transformers sees them
    if ckpt.config is None:
        raise SurgeonError(f"{path}: no config.json")
    ckpt.check_config()  # before building: a config of 10^9 layers over 2 would take minutes and gigabytes
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except Exception as e:
        raise SurgeonError(f"{path}/config.json: transformers cannot read it ({str(e).splitlines()[0]})") from None
    if isinstance(model_class, str):
        model_class = getattr(transformers, model_class)
    cls = model_class or model_class_for(config)
    try:
        model, info = cls.from_pretrained(path, config=config, use_safetensors=True, output_loading_info=True,
                                          **kwargs)
    except (RuntimeError, ValueError, OSError, KeyError) as e:  # shapes that disagree with the config, mostly
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if "size mismatch" in line or "shape" in line), lines[0] if lines else "")
        raise SurgeonError(f"{path}: transformers cannot build {cls.__name__} from these weights "
                           f"({detail[:300] or e.__class__.__name__})") from None
    check_loaded(path, model, info, ckpt)
    return model.eval()


def _family_loader(path: Path):
    """The loader function of the checkpoint's family when it has one (Family.loader), else None."""
    from importlib import import_module

    from surgeon.anatomy import FAMILIES

    if not any(f.loader for f in FAMILIES.values()):
        return None
    from surgeon.io.checkpoint import Checkpoint

    try:
        family = Checkpoint.open(path).family
    except SurgeonError:
        return None
    if family.loader is None:
        return None
    module, name = family.loader
    return getattr(import_module(module), name)


def check_loaded(path: Path, model, info: dict, ckpt) -> None:
    """Refuse a model that transformers built from other weights than the checkpoint's: backbone tensors
    it did not find (left random), layer tensors it did not use (a layer dropped), shapes it replaced.
    A task head that is new (missing) or another task's head left unused is normal."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, "base_model", model)
    family = ckpt.family
    # task heads are new when the checkpoint is another task's; some (Whisper's) sit beside the encoder
    backbone = {n for n, _ in [*base.named_parameters(), *base.named_buffers()]
                if n.split(".")[0] not in family.heads}
    backbone |= {f"{prefix}.{n}" for n in backbone}
    missing = sorted(k for k in info.get("missing_keys", ()) if k in backbone)
    if missing:
        raise SurgeonError(f"{path}: {len(missing)} backbone tensors of {type(model).__name__} are not in the "
                           f"weights (first: {missing[0]}); config.json does not describe these weights")
    from surgeon.surgery_keys import method_of_key

    dropped = sorted(k for k in info.get("unexpected_keys", ())  # injected modules are loaded by surgeon itself
                     if not method_of_key(k) and (family.parse(k, "disk") or family.parse(k, "memory")))
    if dropped:
        raise SurgeonError(f"{path}: {len(dropped)} layer tensors of the weights have no place in the model that "
                           f"config.json describes (first: {dropped[0]})")
    mismatched = list(info.get("mismatched_keys", ()))
    if mismatched:
        first = mismatched[0]
        name = first[0] if isinstance(first, (tuple, list)) else first
        raise SurgeonError(f"{path}: {len(mismatched)} tensors of the weights have other shapes than config.json "
                           f"says (first: {name})")


def family_of_model(model) -> Family:
    """The model's family: by its config's model_type, else by the layout of its parameter names (an
    unknown model_type whose modules follow a known family's, such as CamemBERT's)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) if config is not None else None
    if isinstance(config, dict):
        model_type = config.get("model_type")
    family = family_by_type(model_type) or family_by_layout_type(model_type)
    if family is not None:
        return family
    cached = model.__dict__.get(_LAYOUT)
    if cached is None or cached[0] != model_type:
        try:
            found = family_from_keys(model.state_dict().keys(), source=type(model).__name__)
        except SurgeonError:
            raise SurgeonError(f"{type(model).__name__}: unknown architecture model_type={model_type!r} and its "
                               f"modules follow no known layout") from None
        cached = model.__dict__[_LAYOUT] = (model_type, found.name)
    from surgeon.anatomy import FAMILIES

    return FAMILIES[cached[1]]


_LAYOUT = "_surgeon_layout"  # (model_type, family name) found from a model's parameter names


def base_prefix(model, family: Family | None = None) -> str:
    """'' when `model` is the base model itself, else '<base_prefix>.' (e.g. 'hubert.'); for a model read
    through its layout (a CamemBERT as a RoBERTa), the prefix its parameter names show."""
    family = family or family_of_model(model)
    if hasattr(model, family.base_prefix):
        return f"{family.base_prefix}."
    if family_by_type(getattr(model.config, "model_type", None)) is family:
        return ""
    found = family.fit(model.state_dict().keys())
    return found[1] if found else ""


def layer_module_path(model, family: Family, i: int, role: str | None = None) -> str:
    """Module path of layer i (or of a role in it) in the in-memory model."""
    naming = family.memory
    path = naming.layer_path(i) if role is None else naming.role_path(i, role)
    return base_prefix(model, family) + path


def layer_modules(model, family: Family | None = None) -> list:
    family = family or family_of_model(model)
    return list(model.get_submodule(base_prefix(model, family) + family.memory.layers))
