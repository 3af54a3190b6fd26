"""Same-family merges of several models (a TOML merge config) as a plan on the seam.

The output has the layout of the base (or, for methods without one, of the first model). Every
merged tensor reads the same tensor of each model (and of the base) in float32, hands them to the
method's `combine` as one TensorTask, and is cast once to the output dtype; every other tensor is
copied from the layout checkpoint bit for bit. With `roles`, only the tensors of those anatomy roles
(in every layer) are merged; without, every float tensor is. Weights, densities and float parameters
given per layer or per tensor (surgeon.merging.settings) are evaluated here, once per tensor, from
the layout's anatomy. All of it is checked from the headers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from surgeon.errors import SurgeonError
from surgeon.io.checkpoint import Checkpoint
from surgeon.merging.seam import Input, Plan, make_ops, output_dtype, provenance, run
from surgeon.merging.settings import where_in
from surgeon.merging.tasks import TensorTask


@dataclass
class MultiPlan(Plan):
    config: object = None
    refs: list[str] = field(default_factory=list)  # config refs, models first, then the base

    def describe(self) -> dict:
        c = self.config
        models = [{"ref": m.ref, "path": str(ck.path), "family": ck.family.name, "weight": _plain(m.weight),
                   "density": _plain(m.density)}
                  for m, ck in zip(c.models, self.checkpoints[1:])]
        base = None
        if c.base:
            ck = self.checkpoints[0]
            base = {"ref": c.base, "path": str(ck.path), "family": ck.family.name}
        params = c.params.model_dump(by_alias=True) if c.params is not None else {}
        for attr, setting in c._settings.items():  # as given: a gradient or conditions
            params[c.params.model_fields[attr].alias or attr] = _plain(setting)
        doc = {"base": base, "layout": str(self.base.path), "models": models, "roles": c.roles,
               "parameters": params, **self.summary()}
        if c.per_tensor:  # what each merged tensor got
            doc["values"] = {op.key: op.meta["values"] for op in self.merged}
        return doc


def _plain(setting):
    """A setting as JSON-ready data."""
    if isinstance(setting, list):
        return [_plain(s) for s in setting]
    if hasattr(setting, "model_dump"):
        return setting.model_dump(exclude_none=True)
    return setting


def _counterpart(layout: Checkpoint, other: Checkpoint, key: str) -> Optional[str]:
    """The key of `layout`'s tensor `key` in `other` (same family; the naming scheme may differ)."""
    if key in other:
        return key
    fam = layout.family
    parsed = fam.parse(key[len(layout.prefix):] if key.startswith(layout.prefix) else key, layout.scheme)
    if parsed:
        _, layer, role, leaf = parsed
        cand = other.role_key(layer, role, leaf)
        if cand in other:
            return cand
    try:
        cand = fam.translate(key, layout.scheme, other.scheme)
    except SurgeonError:
        return None
    return cand if cand in other else None


def selected(layout: Checkpoint, key: str, roles) -> bool:
    info = layout.info(key)
    if not info.is_float or info.dtype.startswith("F8"):
        return False
    if roles is None:
        return True
    key_rel = key[len(layout.prefix):] if key.startswith(layout.prefix) else key
    parsed = layout.family.parse(key_rel, layout.scheme) or layout.family.parse(key, layout.scheme)
    return bool(parsed) and parsed[2] in roles and parsed[3] in ("weight", "bias")


def open_model(ref: str, key: str, allow_pickle: bool = False) -> Checkpoint:
    """A model of the config; a surgery directory (a PETL run's adapter alone) gets the way to a model."""
    from surgeon.api import is_adapter_dir
    from surgeon.refs import resolve

    try:
        path = resolve(ref)
    except SurgeonError:
        path = None
    if path is not None and is_adapter_dir(path):
        raise SurgeonError(f"{key}: {ref} is a surgery directory (an adapter without its model); merges take models: "
                           f"`surgeon export {ref} --as model --out DIR` folds a LoRA, BitFit or full run into one")
    return Checkpoint.open(ref, allow_pickle=allow_pickle)


def build_multi_plan(config, *, allow_pickle: bool = False) -> Plan:
    """The plan of a merge config: the same-family plan below, or the method's own (`build`)."""
    module = config.module()
    if hasattr(module, "build"):
        return module.build(config, allow_pickle=allow_pickle)
    models = [open_model(m.ref, f"models.{i}.ref", allow_pickle) for i, m in enumerate(config.models)]
    base = open_model(config.base, "base", allow_pickle) if config.base else None
    layout = base or models[0]
    for m, ck in zip(config.models, models):
        if ck.family.name != layout.family.name:
            raise SurgeonError(f"models: {m.ref} is {ck.family.name}, but {layout.path} is {layout.family.name}; "
                               "these merges need models of one family")
    checkpoints = [layout] + models  # input i + 1 is model i; 0 is the base / layout
    needs_base = module.NEEDS_BASE

    def combine(arrays, op):
        import warnings

        import torch

        with warnings.catch_warnings():  # read-only mapped views: the methods never write into inputs
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors = [torch.from_numpy(a) for a in arrays]
        base_t, inputs = (tensors[0], tensors[1:]) if needs_base else (None, tensors)
        weights, densities, params = op.meta["task_values"]
        task = TensorTask(op.key, tuple(inputs), base_t, weights, densities)
        out = module.combine(task, params)
        return out.detach().to(torch.float32).contiguous().numpy()

    merged, roles = {}, config.roles
    if roles is not None:
        have = set(layout.family.naming(layout.scheme).roles)
        missing = [r for r in roles if r not in have]
        if missing:
            raise SurgeonError(f"roles: family {layout.family.name} has no role {missing[0]!r} "
                               f"(its roles: {', '.join(sorted(have))})")
    for key, info in layout.tensors.items():
        if not selected(layout, key, roles):
            continue
        inputs = [Input(0, key)] if needs_base else []  # the base is read only for methods that use it
        for j, (m, ck) in enumerate(zip(config.models, models), start=1):
            other = _counterpart(layout, ck, key)
            if other is None:
                raise SurgeonError(f"models: {m.ref} has no tensor {key} (or its counterpart); the models differ in layout")
            o = ck.info(other)
            if tuple(o.shape) != tuple(info.shape):
                raise SurgeonError(f"models: {m.ref}: {other} is {list(o.shape)}, but {key} in {layout.path} is {list(info.shape)}")
            if not o.is_float or o.dtype.startswith("F8"):
                raise SurgeonError(f"models: {m.ref}: {other} is {o.dtype}, not a float tensor (quantised?)")
            inputs.append(Input(j, other))
        weights, densities, params = config.values_at(where_in(layout, key))
        if config.method == "linear" and getattr(params, "normalize", False) and math.fsum(weights) == 0:
            raise SurgeonError(f"models: linear with normalize = true needs weights that do not sum to 0 (at {key})")
        values = {"weight": list(weights)} if module.USES_WEIGHT else {}
        if module.USES_DENSITY:
            values["density"] = list(densities)
        values.update({params.model_fields[a].alias or a: getattr(params, a) for a in config._settings})
        merged[key] = (inputs, combine, {"task_values": (weights, densities, params), "values": values})
    if not merged:
        raise SurgeonError(f"roles: no tensor of {layout.path} has the roles {', '.join(roles or [])}; nothing to merge")
    out_dtype = output_dtype(config.dtype)
    ops = make_ops(layout, merged, out_dtype)
    # methods read their inputs as read-only views of the mapped files (no read copy) and write only
    # into tensors of their own (tests/test_merge_methods.py checks the inputs stay unchanged)
    return MultiPlan(config.method, checkpoints, ops, out_dtype, views=True, config=config)


def run_multi(plan: MultiPlan, out: str | Path, *, force: bool = False) -> Path:
    return run(plan, out, record=provenance(plan.method, plan.describe()), force=force)
