"""Base models built on the spot (a recipe's `tiny` model, an AST initialised from an ImageNet ViT),
recorded so that they can be built again.

A built model has no checkpoint to point to, so a surgery made on it records how it was built
instead: its base carries `"build": {...}`, and `surgeon.load`, `surgeon strip` and `surgeon eval
--model` rebuild it from that. The training builds its models *from* such a record (`build`), so the
record describes exactly what was built, and rebuilding is exact (tests/test_runs_become_models.py
compares the tensors bit for bit; the base's fingerprint is checked on every load as well).

    {"kind": "tiny", "family": "ast", "model_class": "ASTForAudioClassification", "config": {...}, "seed": 0}
    {"kind": "imagenet-vit", "vit": <a tiny record> | {"kind": "ref", "path": "/abs/vit"}, "config": {...}}
"""
from __future__ import annotations

from surgeon.errors import SurgeonError

BUILT = "_surgeon_built"  # the record, kept on the model object


def tiny_record(family: str, model_class: str | None, config: dict, seed: int = 0) -> dict:
    return {"kind": "tiny", "family": family, "model_class": model_class, "config": dict(config), "seed": seed}


def imagenet_vit_record(vit: dict, config: dict) -> dict:
    return {"kind": "imagenet-vit", "vit": vit, "config": dict(config)}


def ref_record(ref) -> dict:
    from pathlib import Path

    from surgeon.refs import resolve

    return {"kind": "ref", "path": str(Path(resolve(ref)).resolve())}


def build(record: dict):
    """The model a record describes, carrying the record."""
    from surgeon.hf import quiet_transformers

    quiet_transformers()
    kind = record.get("kind")
    if kind == "tiny":
        from surgeon.tiny import build_tiny

        model = build_tiny(record["family"], model_class=record.get("model_class"), seed=record.get("seed", 0),
                           **record.get("config", {}))
    elif kind == "imagenet-vit":
        from surgeon.train.imagenet_init import ast_from_vit

        vit = record["vit"]
        model = ast_from_vit(build(vit) if vit.get("kind") == "tiny" else _existing(vit["path"]), **record["config"])
    else:
        raise SurgeonError(f"the base model was built in a way this surgeon does not know ({kind!r})")
    model.__dict__[BUILT] = record
    return model


def _existing(path: str) -> str:
    from pathlib import Path

    if not Path(path).exists():
        raise SurgeonError(f"the ViT this AST was initialised from ({path}) cannot be found; pass the base model (--base)")
    return path


def record_of(model) -> dict | None:
    return model.__dict__.get(BUILT)


def describe(record: dict) -> str:
    """'a tiny ast (ASTForAudioClassification, max_length=100)' and the like, for messages and cards."""
    config = ", ".join(f"{k}={v}" for k, v in sorted(record.get("config", {}).items()))
    if record.get("kind") == "tiny":
        return f"a tiny {record['family']} built from its config" + (f" ({config})" if config else "")
    if record.get("kind") == "imagenet-vit":
        vit = record["vit"]
        source = describe(vit) if vit.get("kind") == "tiny" else vit.get("path")
        return f"an AST initialised from the ImageNet ViT {source}" + (f" ({config})" if config else "")
    return str(record.get("kind"))
