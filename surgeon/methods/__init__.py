"""The parameter-efficient methods, registered by name (one small module per method).

Importing this package is light; a method's module (and torch) loads when the method is looked up.
"""
from __future__ import annotations

from importlib import import_module

from surgeon.errors import SurgeonError

# name -> (module, class)
REGISTRY = {
    "bottleneck": ("bottleneck", "BottleneckMethod"),
    "convpass": ("convpass", "ConvpassMethod"),
    "conformer": ("conformer", "ConformerMethod"),
    "loaa": ("loaa", "LoAAMethod"),
    "dense-moa": ("dense_moa", "DenseMoAMethod"),
    "soft-moa": ("soft_moa", "SoftMoAMethod"),
    "lora": ("lora", "LoRAMethod"),
    "prefix": ("prefix", "PrefixMethod"),
    "prompt": ("prompt", "PromptMethod"),
    "bitfit": ("bitfit", "BitFitMethod"),
    "linear": ("linear", "LinearMethod"),
    "full": ("full", "FullMethod"),
}
METHOD_NAMES = tuple(REGISTRY)


def get_method(name: str):
    """The method object registered under `name`; an unknown name gets a did-you-mean."""
    from surgeon.errors import did_you_mean

    key = str(name).strip().lower().replace("_", "-")
    if key not in REGISTRY:
        raise SurgeonError(f"unknown method {name!r}{did_you_mean(key, REGISTRY)}; methods: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[key]
    return getattr(import_module(f"surgeon.methods.{module}"), cls)()
