"""BitFit: train every bias of the encoder's Linear and LayerNorm modules, the final encoder LayerNorm's
bias included (102,144 at AST-base); nothing is added, so the model is unchanged at first."""
from __future__ import annotations

from torch import nn

from surgeon.methods.base import Method


class BitFitMethod(Method):
    name = "bitfit"

    def apply(self, target, opts):
        names = []
        layers_path = target.prefix + target.family.memory.layers
        scopes = [(layers_path, target.layers)]
        if target.final_norm_path():
            scopes.append((target.final_norm_path(), target.model.get_submodule(target.final_norm_path())))
        for scope, root in scopes:
            for path, module in root.named_modules():
                if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is not None:
                    names.append(".".join(p for p in (scope, path, "bias") if p))
        return names
