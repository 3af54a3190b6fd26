"""The per-tensor task a merge method combines: one output tensor's inputs, already read as float32.

The plan (built from headers) decides which tensors are merged; the runner reads them and hands a
method one `TensorTask` at a time, so a method never sees keys of a family, files or dtypes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class TensorTask:
    key: str  # the output tensor's name: seeds DARE's drop mask, names the tensor in messages
    inputs: tuple["Tensor", ...]  # float32, one per model in config order
    base: Optional["Tensor"]  # float32, the base model's tensor; None when the method needs no base
    weights: tuple[float, ...]  # one per model
    densities: tuple[float, ...]  # one per model; 1.0 where the method has none
