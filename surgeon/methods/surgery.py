"""Applying and removing methods on a model in memory, freezing, and the papers' parameter accounting.

The model carries what was done to it in `model.__dict__["_surgeon"]`: the base it started from (its
reference, fingerprint, family, architecture and config before any surgery) and one entry per method
(name, resolved options, added and PETL parameter counts, unfrozen backbone parameter names).
"""
from __future__ import annotations

from surgeon.errors import SurgeonError
from surgeon.methods import get_method
from surgeon.methods.hooks import remove_hooks, remove_modules
from surgeon.methods.target import Target
from surgeon.surgery_keys import method_of_key

STATE = "_surgeon"


def state(model) -> dict | None:
    return model.__dict__.get(STATE)


def base_info(model) -> dict:
    from surgeon.fingerprint import model_fingerprint
    from surgeon.hf import family_of_model

    ref = getattr(model.config, "_name_or_path", "") or None
    return {
        "ref": ref,
        "path": None,
        "fingerprint": model_fingerprint(model),
        "family": family_of_model(model).name,
        "architecture": type(model).__name__,
    }


def ensure_state(model) -> dict:
    st = state(model)
    if st is None:
        from surgeon.refs import resolve

        info = base_info(model)
        if info["ref"]:
            try:
                info["path"] = str(resolve(info["ref"]).resolve())
            except SurgeonError:
                pass
        st = {"base": info, "config": model.config.to_dict(), "methods": []}
        model.__dict__[STATE] = st
    return st


def method_parameter_names(model, method: str) -> list[str]:
    return [n for n, _ in model.named_parameters() if method_of_key(n) == method]


def apply_method(model, method: str, options: dict | None = None) -> dict:
    """Inject `method` with `options` into `model` (in place); returns the record entry."""
    m = get_method(method)
    target = Target(model)
    st = state(model)
    carried = {e["method"] for e in (st or {}).get("methods", [])} | {
        method_of_key(n) for n, _ in model.named_parameters() if method_of_key(n)}
    if m.name in carried:
        raise SurgeonError(f"{m.name}: the model already carries this method; strip it first")
    opts = m.resolve(target, dict(options or {}))
    st = ensure_state(model)
    try:
        unfrozen = m.apply(target, opts)
    except BaseException:  # leave the model as it was
        m.undo(target)
        remove_hooks(model, m.name)
        remove_modules(model, m.attr)
        if not st["methods"]:
            del model.__dict__[STATE]
        raise
    for module in model.modules():  # new modules start in training mode; follow the model's mode
        for name, child in module.named_children():
            if name == m.attr or name.startswith(m.attr + "__"):
                child.train(model.training)
    params = dict(model.named_parameters())
    added = sum(params[n].numel() for n in method_parameter_names(model, m.name))
    petl = added + sum(params[n].numel() for n in dict.fromkeys(unfrozen))
    entry = {"method": m.name, "options": opts, "num_parameters": added, "petl_parameters": petl,
             "unfrozen": list(dict.fromkeys(unfrozen))}
    st["methods"].append(entry)
    freeze(model)
    return entry


def freeze(model) -> None:
    """requires_grad on: every injected module, what the methods unfreeze, and the head."""
    st = state(model) or {"methods": []}
    target = Target(model)
    unfrozen = {n for e in st["methods"] for n in e.get("unfrozen", [])}
    for name, p in model.named_parameters():
        p.requires_grad_(bool(method_of_key(name)) or name in unfrozen or target.is_head(name))


def strip_methods(model, method: str | None = None) -> list[str]:
    """Remove every injected method (or one); returns the names removed. Backbone parameters a method
    trained (BitFit biases, unfrozen LayerNorms) keep their values: strip removes what was added."""
    st = state(model)
    names = [e["method"] for e in (st or {}).get("methods", [])]
    names += [m for m in {method_of_key(n) for n, _ in model.named_parameters()} if m and m not in names]
    if method is not None:
        key = get_method(method).name
        if key not in names:
            raise SurgeonError(f"{key}: the model does not carry this method")
        names = [key]
    target = Target(model)
    for name in names:
        m = get_method(name)
        m.undo(target)
        remove_hooks(model, m.name)
        remove_modules(model, m.attr)
    if st is not None:
        st["methods"] = [e for e in st["methods"] if e["method"] not in names]
        if not st["methods"]:
            del model.__dict__[STATE]
    if state(model):
        freeze(model)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return names


def parameter_groups(model) -> dict[str, list]:
    """Trainable parameters by group: the methods' modules, unfrozen backbone parameters, the head."""
    target = Target(model)
    groups = {"method": [], "backbone": [], "head": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group = "method" if method_of_key(name) else "head" if target.is_head(name) else "backbone"
        groups[group].append(p)
    return groups
