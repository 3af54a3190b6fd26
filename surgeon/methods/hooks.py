"""Forward hooks that route a sub-layer's input or output through an injected module.

Hooks are small callable objects holding only plain data (the method name, the attribute of the
injected module, placement flags). They find their module with `getattr(module, attr)` on the module
they are registered on, so a deep-copied model keeps working hooks, and `remove_hooks` finds every
surgeon hook by type, with no handles to keep.

A `Span` stands for a sub-layer without a module of its own (Whisper's FFN, fc1 -> act -> fc2 on the
layer): injected modules live on its exit module, and a hook registered on it sees the entry's input
as the sub-layer's input and the exit's output as its output. Its two halves meet through the exit
module: the entry's pre-hook leaves the input there for the exit's hook (a reference to the exit
module, which a deep copy of the model maps to the copy's).
"""
from __future__ import annotations

from torch import nn


class SurgeonHook:
    """Base of every hook surgeon registers; `method` names the method that owns it."""

    pre = False  # a forward pre-hook (changes the input) or a forward hook (changes the output)

    def __init__(self, method: str, attr: str):
        self.method = method
        self.attr = attr

    def register(self, module) -> None:
        if isinstance(module, Span):
            module.register(self)
        elif self.pre:
            module.register_forward_pre_hook(self, with_kwargs=True)
        else:
            module.register_forward_hook(self, with_kwargs=True)


class Route:
    """Stands in for a method of one module instance (set in its __dict__) while a surgeon method is
    injected: `fn(module, *args)` computes what the module's own method does, through module calls
    the surgeon method hooks (surgeon.methods.routes). `remove_hooks` removes it with the method's hooks."""

    def __init__(self, method: str, module: nn.Module, fn):
        self.method, self.module, self.fn = method, module, fn

    def __call__(self, *args, **kwargs):
        return self.fn(self.module, *args, **kwargs)


SPAN_INPUT = "_surgeon_span_input"


class Span:
    """A sub-layer made of an entry and an exit module; module-like enough for the methods: injected
    modules are added to the exit module, parameters and modules are the exit's."""

    def __init__(self, entry: nn.Module, exit: nn.Module):
        self.entry, self.exit = entry, exit

    def add_module(self, name: str, module: nn.Module) -> None:
        self.exit.add_module(name, module)

    def parameters(self):
        return self.exit.parameters()

    def named_modules(self, *args, **kwargs):
        return self.exit.named_modules(*args, **kwargs)

    def register(self, hook: SurgeonHook) -> None:
        if hook.pre:  # changes the sub-layer's input: the entry's, with the injected modules of the exit
            SpanPre(hook, self.exit).register(self.entry)
        else:
            SpanTap(hook.method, self.exit).register(self.entry)
            SpanPost(hook).register(self.exit)


class SpanPre(SurgeonHook):
    """Pre-hook on a span's entry: runs `inner` as if on the span (its modules on the exit module)."""

    pre = True

    def __init__(self, inner: SurgeonHook, exit: nn.Module):
        super().__init__(inner.method, inner.attr)
        self.inner, self.exit = inner, exit

    def __call__(self, module, args, kwargs):
        return self.inner(self.exit, args, kwargs)


class SpanTap(SurgeonHook):
    """Pre-hook on a span's entry: leave the sub-layer's input on the exit module for SpanPost."""

    pre = True

    def __init__(self, method: str, exit: nn.Module):
        super().__init__(method, f"{SPAN_INPUT}__{method}")
        self.exit = exit

    def __call__(self, module, args, kwargs):
        self.exit.__dict__[self.attr] = (args, kwargs)
        return None


class SpanPost(SurgeonHook):
    """Forward hook on a span's exit: runs `inner` with the entry's input and the exit's output."""

    def __init__(self, inner: SurgeonHook):
        super().__init__(inner.method, inner.attr)
        self.inner = inner

    def __call__(self, module, args, kwargs, output):
        entry_args, entry_kwargs = module.__dict__.pop(f"{SPAN_INPUT}__{self.method}")
        return self.inner(module, entry_args, entry_kwargs, output)


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
        for key in [k for k in module.__dict__ if k.startswith(SPAN_INPUT) and method in (None, k.split("__")[-1])]:
            del module.__dict__[key]
        for key in [k for k, v in module.__dict__.items() if isinstance(v, Route) and method in (None, v.method)]:
            del module.__dict__[key]
    return removed


def remove_modules(model: nn.Module, attr_prefix: str) -> int:
    """Delete every child module whose attribute name is attr_prefix or attr_prefix + '__<slot>'."""
    removed = 0
    for module in list(model.modules()):
        for name in [n for n in module._modules if n == attr_prefix or n.startswith(attr_prefix + "__")]:
            del module._modules[name]
            removed += 1
    return removed
