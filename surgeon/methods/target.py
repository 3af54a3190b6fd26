"""What a method needs to know about the model it is injected into, found through the anatomy table.

A `Target` wraps a transformers model: its family, the base model inside a task model, the layer list,
the hidden size, the module of a role in a layer, the head's parameter names and the patch grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from surgeon.anatomy import Family
from surgeon.errors import SurgeonError

SUBLAYER_ROLE = {"mhsa": "attn", "ffn": "ffn"}  # --location -> the role of the sub-layer module
SUBLAYER_NORM = {"mhsa": "attn_norm", "ffn": "ffn_norm"}  # the LayerNorm that belongs to it


@dataclass
class Target:
    model: object

    @cached_property
    def family(self) -> Family:
        from surgeon.hf import family_of_model

        return family_of_model(self.model)

    @cached_property
    def prefix(self) -> str:
        from surgeon.hf import base_prefix

        return base_prefix(self.model, self.family)

    @property
    def config(self):
        return self.model.config

    @property
    def base(self):
        return self.model.get_submodule(self.prefix.rstrip(".")) if self.prefix else self.model

    @property
    def hidden_size(self) -> int:
        return int(self.family.dims(self.config.to_dict())["hidden_size"])

    @property
    def layers(self):
        return self.model.get_submodule(self.prefix + self.family.memory.layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def path(self, i: int, role: str | None = None) -> str:
        """Module path in the model of layer i, or of a role in it."""
        naming = self.family.memory
        return self.prefix + (naming.layer_path(i) if role is None else naming.role_path(i, role))

    def module(self, i: int, role: str | None = None):
        return self.model.get_submodule(self.path(i, role))

    def is_head(self, name: str) -> bool:
        """A parameter of the task head (outside the base model)."""
        if not self.prefix:
            return False
        return name.split(".", 1)[0] in self.family.heads

    def is_frontend(self, name: str) -> bool:
        return any(name.startswith(self.prefix + f + ".") for f in self.family.frozen_frontend)

    def final_norm_path(self) -> str | None:
        return self.prefix + self.family.final_norm if self.family.final_norm else None

    # -- the patch grid -----------------------------------------------------------------------------
    def grid_axes(self) -> list[tuple[int, int, int]]:
        """[(size, patch, stride) for frequency, for time]; refuses a model without a patch grid."""
        grid = self.family.token_grid
        if grid is None:
            raise SurgeonError(
                f"{self.family.name}: this model has no 2-D patch grid (only patch models such as ast or vit have one)")
        cfg = self.config
        axes = []
        for size_key, patch_key, stride_key in grid:
            size, patch, stride = getattr(cfg, size_key), getattr(cfg, patch_key), getattr(cfg, stride_key)
            axes.append(tuple(int(v[0] if isinstance(v, (list, tuple)) else v) for v in (size, patch, stride)))
        return axes

    def grid_shape(self) -> tuple[int, int]:
        return tuple((size - patch) // stride + 1 for size, patch, stride in self.grid_axes())

    def overlapping(self) -> bool:
        return any(stride < patch for _, patch, stride in self.grid_axes())

    def layout(self):
        from surgeon.modules.layout import TokenLayout

        freq, time = self.grid_shape()
        return TokenLayout(self.family.num_special_tokens, freq, time)
