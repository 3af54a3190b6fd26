"""surgeon: model surgery and merging for audio and speech transformers.

Importing `surgeon` is cheap: torch and transformers load only when a function that needs them runs.
"""
from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_LAZY = {
    "SurgeonError": "surgeon.errors",
    "Checkpoint": "surgeon.io.checkpoint",
    "detect_family": "surgeon.anatomy",
    "FAMILIES": "surgeon.anatomy",
    "load": "surgeon.api",
    "inject": "surgeon.api",
    "strip": "surgeon.api",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'surgeon' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
