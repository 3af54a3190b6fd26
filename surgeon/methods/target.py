"""What a method needs to know about the model it is injected into, found through the anatomy table.

A `Target` wraps a transformers model: its family, the base model inside a task model, the layer list,
the hidden size, the module of a role in a layer, the head's parameter names and the patch grid.

A sub-layer without a module of its own (Whisper's FFN: fc1 -> act -> fc2 straight on the layer) is
returned as a `Span` (surgeon.methods.hooks), which hooks and injected modules treat as one module.
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
        """Module path in the model of layer i, or of a role in it (a span: its exit module)."""
        naming = self.family.memory
        if role in naming.spans:
            return f"{self.prefix}{naming.layer_path(i)}.{naming.spans[role][1]}"
        return self.prefix + (naming.layer_path(i) if role is None else naming.role_path(i, role))

    def module(self, i: int, role: str | None = None):
        """The module of layer i or of a role in it; a `Span` for a sub-layer without a module."""
        naming = self.family.memory
        if role in naming.spans:
            from surgeon.methods.hooks import Span

            layer = self.model.get_submodule(self.prefix + naming.layer_path(i))
            entry, exit_ = naming.spans[role]
            return Span(layer.get_submodule(entry), layer.get_submodule(exit_))
        return self.model.get_submodule(self.path(i, role))

    def computes_sublayer(self, role: str) -> bool:
        """Whether the module of a sub-layer role ("attn", "ffn") computes the whole sub-layer: its output
        projection (o, ffn_out) is inside it. BERT's FFN role, for one, is only the up-projection."""
        naming = self.family.memory
        if role in naming.spans:
            return True
        last = {"attn": "o", "ffn": "ffn_out"}[role]
        if role not in naming.roles or last not in naming.roles:
            return False
        return naming.roles[last].startswith(naming.roles[role] + ".")

    def route_projections(self, i: int, method: str) -> None:
        """Make layer i's attention call its projection modules, for a method hooking them (LoRA), in a
        family whose attention reads their weights directly (`Family.projection_route`, WavLM)."""
        if self.family.projection_route is None:
            return
        from importlib import import_module

        from surgeon.methods.hooks import Route

        module, name = self.family.projection_route
        fn = getattr(import_module(module), name)
        attn = self.module(i, "attn")
        if not isinstance(attn.__dict__.get(fn.attribute), Route):
            attn.__dict__[fn.attribute] = Route(method, attn, fn)

    @cached_property
    def bare(self) -> bool:
        """Whether the model is the family's base model itself (no task head): no base-model attribute
        and transformers' base class. A task model may hold its base modules at the top level
        (WhisperForAudioClassification: encoder, projector, classifier)."""
        if self.prefix:
            return False
        try:
            from transformers import MODEL_MAPPING

            return isinstance(self.model, MODEL_MAPPING[type(self.config)])
        except KeyError:  # a model surgeon implements (BEATs): bare when it holds none of the family's heads
            return not any(getattr(self.model, h, None) is not None for h in self.family.heads)
        except ImportError:
            return True

    def is_head(self, name: str) -> bool:
        """A parameter of the task head: a top-level module the family names as a head, in a task model
        (a bare model's pooler is its own); with the papers' mean head (surgeon.heads) the encoder's final
        LayerNorm belongs to the head and trains with it."""
        if self.bare:
            return False
        if name.split(".", 1)[0] in self.family.heads:
            return True
        from surgeon.heads import trains_final_norm

        norm = self.final_norm_path() if trains_final_norm(self.model) else None
        return norm is not None and name.startswith(norm + ".")

    def is_frontend(self, name: str) -> bool:
        return any(name.startswith(self.prefix + f + ".") for f in self.family.frozen_frontend)

    def final_norm_path(self) -> str | None:
        """The encoder's final LayerNorm: the first of the family's candidates with parameters."""
        for path in self.family.final_norms():
            try:
                module = self.model.get_submodule(self.prefix + path)
            except AttributeError:
                continue
            if any(True for _ in module.parameters()):
                return self.prefix + path
        return None

    # -- the patch grid -----------------------------------------------------------------------------
    def grid_axes(self) -> list[tuple[int, int, int]]:
        """[(size, patch, stride) for frequency, for time]; refuses a model without a patch grid."""
        from surgeon.positions import patch_axes

        return patch_axes(self.family, self.config)

    def grid_shape(self) -> tuple[int, int | None]:
        """(frequency, time) patches; None for an axis that follows the input (BEATs' time)."""
        return tuple(None if axis is None else (axis[0] - axis[1]) // axis[2] + 1 for axis in self.grid_axes())

    def overlapping(self) -> bool:
        return any(axis is not None and axis[2] < axis[1] for axis in self.grid_axes())

    def layout(self):
        from surgeon.modules.layout import TokenLayout

        freq, time = self.grid_shape()
        return TokenLayout(self.family.num_special_tokens, freq, time, self.family.token_order)
