"""`surgeon validate`: resolve everything a recipe names without training, and list every problem.

Checks, each independent so one report shows them all: the recipe itself (schema; a schema error
stops here since nothing else can be read), the dataset (index, classes, splits per cell, files the
metadata lists but that are missing), the model and method (built and injected for real, or on a
tiny stand-in of the same family with offline_model="tiny"; parameter table per group), the device
and precision.
"""
from __future__ import annotations

from surgeon.errors import SurgeonError


def validate_recipe(path, overrides=(), offline_model: str | None = None) -> dict:
    """Every problem of a recipe, each once and named by its dotted key (report["problems"])."""
    from surgeon.recipes.load import path_problems, recipe_doc, schema_problems

    source, doc = recipe_doc(path, list(overrides))
    recipe, problems = schema_problems(doc)
    report = {"recipe": str(source), "problems": problems}
    problems += path_problems(doc)
    if offline_model is None:  # the tiny stand-in needs no checkpoint
        _check_ref((doc.get("model") or {}).get("ref") if isinstance(doc.get("model"), dict) else None, report)
    if recipe is None:  # the rest reads a valid recipe: what could be checked on the table was
        return _once(report)
    recipe._source = source
    index = _check_data(recipe, report)
    _check_device(recipe, report)
    _check_loggers(recipe, report)
    if not any(p.startswith("model.ref:") for p in problems) and (index is not None or not problems):
        _check_model(recipe, index, report, offline_model)
    return _once(report)


def _check_ref(ref, report) -> None:
    from surgeon.recipes.load import model_ref_problem

    problem = model_ref_problem(ref)
    if problem:
        report["problems"].append(problem)


def _once(report: dict) -> dict:
    """Each problem once, in the order found (two checks can meet the same fault)."""
    report["problems"] = list(dict.fromkeys(report["problems"]))
    return report


def _check_loggers(recipe, report):
    from surgeon.train.loggers import check_loggers

    try:
        check_loggers(recipe)
    except SurgeonError as e:
        report["problems"].append(str(e))


def _check_data(recipe, report):
    from surgeon.train.runs import load_dataset, plan_cells

    if recipe.data.root is not None and any("data.root" in p for p in report["problems"]):
        return None
    try:
        index = load_dataset(recipe)
        cells = plan_cells(recipe, index)
    except SurgeonError as e:
        report["problems"].append(str(e))
        return None
    seen = {}
    for c in cells:
        seen.setdefault(c.split.name, {"name": c.split.name, "train": len(c.train), "valid": len(c.split.valid),
                                       "test": len(c.split.test)})
    report["data"] = {
        "format": index.name, "root": str(index.root) if index.root else None,
        "num_items": len(index.items), "num_classes": index.num_classes, "classes": index.classes,
        "class_counts": index.class_counts(), "protocol": recipe.data.protocol or index.protocol,
        "cells": [c.name for c in cells], "splits": list(seen.values()), "missing": list(index.missing),
    }
    if index.missing and recipe.data.on_error == "raise":
        report["problems"].append(f"data: {len(index.missing)} files listed by the metadata are missing "
                                  f"(first: {index.missing[0]}); set data.on_error = 'skip' to train without them")
    unreadable = _unreadable_audio(index)
    report["data"]["unreadable"] = unreadable
    if unreadable:
        what = f"data: {len(unreadable)} audio files cannot be trained on (first: {unreadable[0]})"
        if recipe.data.on_error == "raise":
            report["problems"].append(what + "; fix or remove them, or set data.on_error = 'skip'")
        else:
            report.setdefault("notes", []).append(what + "; training skips them (data.on_error = 'skip')")
    empty = [name for name, n in index.class_counts().items() if n == 0]
    if empty:
        report["problems"].append(f"data: class {empty[0]!r} has no items" + (f" ({len(empty)} classes)" if len(empty) > 1 else ""))
    return index


def _unreadable_audio(index) -> list[str]:
    """Every listed file train would reject (unreadable, empty, corrupt header, NaN samples): each is
    read once, as training would."""
    from surgeon.data.features import read_audio

    missing = set(map(str, index.missing))
    bad = []
    for item in index.items:
        if item.path is None or str(item.path) in missing or not item.path.is_file():
            continue
        try:
            read_audio(item.path, item.start, item.end)
        except SurgeonError as e:
            bad.append(str(e))
    return bad


def _check_device(recipe, report):
    from surgeon.train.dist import check_precision, resolve_device
    from surgeon.train.runs import check_metrics

    try:
        check_metrics(recipe)
    except SurgeonError as e:
        report["problems"].append(str(e))
    try:
        device = resolve_device(recipe.train.device)
        report["device"] = str(device)
        report["precision"] = recipe.train.precision
        check_precision(recipe.train.precision, device)
    except SurgeonError as e:
        report["problems"].append(str(e))


def _check_model(recipe, index, report, offline_model):
    labels = index.classes if index is not None else ["a", "b"]
    try:
        from surgeon.api import parameter_groups
        from surgeon.train.model import build_model, method_name
        from surgeon.train.runs import feature_spec

        model, spec, _ = build_model(recipe, labels, offline_model=offline_model,
                                     feature_spec=lambda m: feature_spec(recipe, m))
        groups = parameter_groups(model)
        lrs = recipe.train.group_lrs(method_name(recipe))
    except SurgeonError as e:
        report["problems"].append(str(e))
        return
    m = recipe.model
    report["model"] = {
        "source": (f"AST from ViT {m.vit_ref or 'tiny'}" if m.init == "imagenet-vit" else
                   m.ref or (f"tiny {m.tiny}" if m.tiny else m.surgery)),
        "offline": bool(offline_model), "family": model.config.model_type, "task": m.task,
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "groups": [{"group": g, "parameters": sum(p.numel() for p in ps),
                    "trainable": sum(p.numel() for p in ps if p.requires_grad), "lr": lrs[g]}
                   for g, ps in groups.items()],
        "methods": _methods(model),
    }
    if report.get("data") is not None and spec is not None:
        report["data"]["features"] = spec.describe()
    if report["model"]["trainable"] == 0:
        report["problems"].append("method: nothing to train (no parameter requires a gradient)")


def _methods(model) -> list[dict]:
    try:
        from surgeon.api import surgery as surgery_record
    except ImportError:
        return []
    try:
        return list(surgery_record(model).get("methods", []))
    except Exception:  # the parameter table above is the essential part; the record is a bonus
        return []
