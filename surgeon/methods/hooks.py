"""Forward hooks that route a sub-layer's input or output through an injected module.

Hooks are small callable objects holding only plain data (the method name, the attribute of the
injected module, placement flags). They find their module with `getattr(module, attr)` on the module
they are registered on, so a deep-copied model keeps working hooks, and `remove_hooks` finds every
surgeon hook by type, with no handles to keep.
"""
from __future__ import annotations

from torch import nn


class SurgeonHook:
    """Base of every hook surgeon registers; `method` names the method that owns it."""

    pre = False  # a forward pre-hook (changes the input) or a forward hook (changes the output)

    def __init__(self, method: str, attr: str):
        self.method = method
        self.attr = attr

    def register(self, module: nn.Module) -> None:
        if self.pre:
            module.register_forward_pre_hook(self, with_kwargs=True)
        else:
            module.register_forward_hook(self, with_kwargs=True)


def first_input(args, kwargs, name: str = "hidden_states"):
    return args[0] if args else kwargs[name]


def replace_first_input(args, kwargs, value, name: str = "hidden_states"):
    if args:
        return (value, *args[1:]), kwargs
    return args, {**kwargs, name: value}


def first_output(output):
    return output[0] if isinstance(output, tuple) else output


def replace_first_output(output, value):
    return (value, *output[1:]) if isinstance(output, tuple) else value


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")


def remove_hooks(model: nn.Module, method: str | None = None) -> int:
    """Remove surgeon's hooks (of one method, or all) from every module; returns how many."""
    removed = 0
    for module in model.modules():
        for dict_name in _HOOK_DICTS:
            hooks = getattr(module, dict_name)
            for key in [k for k, h in hooks.items() if isinstance(h, SurgeonHook) and method in (None, h.method)]:
                del hooks[key]
                for extra in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"):
                    getattr(module, extra, {}).pop(key, None)
                removed += 1
    return removed


def remove_modules(model: nn.Module, attr_prefix: str) -> int:
    """Delete every child module whose attribute name is attr_prefix or attr_prefix + '__<slot>'."""
    removed = 0
    for module in list(model.modules()):
        for name in [n for n in module._modules if n == attr_prefix or n.startswith(attr_prefix + "__")]:
            del module._modules[name]
            removed += 1
    return removed
