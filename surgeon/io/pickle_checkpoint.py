"""Pickled checkpoints (.bin, .pt, .pth, .ckpt): refused unless the user opts in.

Unpickling can run arbitrary code, so surgeon never unpickles by default; with --allow-pickle it loads
with torch.load(weights_only=True), which only rebuilds tensors and plain containers."""
from __future__ import annotations

from pathlib import Path

from surgeon.errors import SurgeonError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def is_pickle_path(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def refuse(path: Path) -> SurgeonError:
    return SurgeonError(
        f"{path}: refusing to load a pickled checkpoint: unpickling can run arbitrary code. "
        "Convert it to safetensors, or pass --allow-pickle to load it with torch.load(weights_only=True)"
    )


def load_pickle(path: Path):
    """Whatever a pickle holds, loaded safely (weights_only=True: tensors and plain containers only)."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise SurgeonError(f"{path}: not a loadable weights-only checkpoint ({first})") from None


def load_pickle_state_dict(path: Path, obj=None) -> dict:
    """Load a pickled state dict safely (weights_only=True); nested {'state_dict': ...} is unwrapped.
    `obj`: what the pickle holds, when it is already loaded."""
    import torch

    obj = load_pickle(path) if obj is None else obj
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SurgeonError(f"{path}: pickle does not hold a state dict of tensors")
    from surgeon.io.writer import _TORCH_TO_ST

    for key, t in obj.items():
        if not isinstance(key, str):
            raise SurgeonError(f"{path}: state dict key {key!r} is a {type(key).__name__}, not a tensor name")
        if t.layout != torch.strided:
            raise SurgeonError(f"{path}: tensor {key!r} is {str(t.layout).removeprefix('torch.')}; only dense "
                               "tensors can be read (call .to_dense() before saving)")
        if str(t.dtype).removeprefix("torch.") not in _TORCH_TO_ST:
            raise SurgeonError(f"{path}: tensor {key!r} has dtype {str(t.dtype).removeprefix('torch.')}, which "
                               f"safetensors cannot hold (supported: {', '.join(_TORCH_TO_ST)})")
    return obj
