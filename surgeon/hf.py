"""Loading transformers models and finding anatomy roles in them (imports torch and transformers)."""
from __future__ import annotations

import os
from pathlib import Path

from surgeon.anatomy import Family, family_from_config
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
    if not path.is_dir():
        raise SurgeonError(f"{path}: loading a model needs a model directory with config.json")
    ckpt = Checkpoint.open(path)  # validates headers and refuses pickles before transformers sees them
    if ckpt.config is None:
        raise SurgeonError(f"{path}: no config.json")
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except Exception as e:
        raise SurgeonError(f"{path}/config.json: transformers cannot read it ({str(e).splitlines()[0]})") from None
    if isinstance(model_class, str):
        model_class = getattr(transformers, model_class)
    cls = model_class or model_class_for(config)
    model = cls.from_pretrained(path, config=config, use_safetensors=True, **kwargs)
    return model.eval()


def family_of_model(model) -> Family:
    return family_from_config(model.config.to_dict(), source=type(model).__name__)


def base_prefix(model, family: Family | None = None) -> str:
    """'' when `model` is the base model itself, else '<base_prefix>.' (e.g. 'hubert.')."""
    family = family or family_of_model(model)
    return f"{family.base_prefix}." if hasattr(model, family.base_prefix) else ""


def layer_module_path(model, family: Family, i: int, role: str | None = None) -> str:
    """Module path of layer i (or of a role in it) in the in-memory model."""
    naming = family.memory
    path = naming.layer_path(i) if role is None else naming.role_path(i, role)
    return base_prefix(model, family) + path


def layer_modules(model, family: Family | None = None) -> list:
    family = family or family_of_model(model)
    return list(model.get_submodule(base_prefix(model, family) + family.memory.layers))
