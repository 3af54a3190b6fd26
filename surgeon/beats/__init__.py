"""BEATs (Chen et al. 2022), natively: the model, its configuration and the authors' .pt checkpoints.

    from surgeon.beats import load_pt, save_pt
    model = load_pt("BEATs_iter3.pt", allow_pickle=True)   # or surgeon.load(..., allow_pickle=True)
    out = model(input_values=wav, padding_mask=mask)       # out.last_hidden_state [B, tokens, 768]
    save_pt(model, "copy.pt")                               # the authors' layout again

Modules: config (cfg dict -> BEATsConfig), frontend (fbank, padding masks), attention (gated relative
position bias), model (BEATsModel), checkpoint (.pt reading and writing), fixtures (synthetic
checkpoints in the authors' layout, for tests and benchmarks). Importing this package is cheap.
"""
from importlib import import_module

_LAZY = {
    "BEATsConfig": "surgeon.beats.config",
    "BEATsModel": "surgeon.beats.model",
    "BEATsOutput": "surgeon.beats.model",
    "load_pt": "surgeon.beats.checkpoint",
    "save_pt": "surgeon.beats.checkpoint",
    "write_beats_checkpoint": "surgeon.beats.fixtures",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'surgeon.beats' has no attribute {name!r}")


__all__ = list(_LAZY)
