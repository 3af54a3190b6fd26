"""A recipe's model, ready to train: the backbone (a checkpoint, a tiny model built from a config,
a saved surgery, or an AST initialised from an ImageNet ViT), its position table resized to the
recipe's length, a head for the dataset's classes, the optional attention merge, and the PETL method.

The order matters: the head and positions are fixed before injection so the PETL framework sees the
final model (and marks the new head trainable); injection comes last, after the seed is set, so the
adapters' random initialisation is reproducible.
"""
from __future__ import annotations

from surgeon.errors import SurgeonError


# the offline stand-in (validate --offline-model tiny): small, but wide enough for the papers'
# bottleneck widths (up to 216, paper 004 Table 1's (1,1) column) and prompt counts; by dimension, written
# with each family's config keys
STAND_IN_DIMS = dict(hidden_size=256, num_heads=4, intermediate_size=512)
STAND_IN = dict(hidden_size=256, num_attention_heads=4, intermediate_size=512)  # (ViT's keys)


def stand_in_shape(ref, family: str | None = None) -> dict:
    """Config overrides of the offline stand-in for `ref`: small, with the real depth when known."""
    from surgeon.anatomy import DEFAULT_CONFIG_KEYS, FAMILIES
    from surgeon.refs import ALIASES

    dims = dict(STAND_IN_DIMS)
    if ref in ALIASES:
        dims["num_layers"] = ALIASES[ref].num_layers
    elif family in FAMILIES and FAMILIES[family].published_layers:
        dims["num_layers"] = FAMILIES[family].published_layers
    keys = FAMILIES[family].config_keys if family in FAMILIES else DEFAULT_CONFIG_KEYS
    return {keys[d]: v for d, v in dims.items() if isinstance(keys.get(d), str)}


def model_family(recipe, offline_model: str | None = None) -> str:
    """The family of the recipe's model without loading weights."""
    m = recipe.model
    if m.init == "imagenet-vit":
        return "ast"
    if m.tiny:
        return m.tiny
    ref = m.ref or m.surgery
    from surgeon.refs import ALIASES

    if m.ref in ALIASES:
        return ALIASES[m.ref].family
    if offline_model and m.surgery is None and m.allow_pickle:
        from pathlib import Path

        from surgeon.anatomy import FAMILIES
        from surgeon.io.pickle_checkpoint import is_pickle_path

        pickled = [name for name, fam in FAMILIES.items() if fam.published_as_pickle]
        if is_pickle_path(Path(str(m.ref))) and len(pickled) == 1:  # BEATs' .pt: the one family published so
            return pickled[0]
    if offline_model and m.surgery is None:
        raise SurgeonError(f"model.ref: cannot tell the family of {ref!r} offline; use an alias or a local path")
    from surgeon.io.checkpoint import Checkpoint

    if m.surgery:
        return surgery_record(m.surgery)["base"]["family"]
    return Checkpoint.open(ref, allow_pickle=m.allow_pickle).family.name


def surgery_record(folder: str) -> dict:
    """The record of model.surgery (SurgeonError when the folder holds none)."""
    from pathlib import Path

    from surgeon.api import read_record

    record = read_record(Path(folder))
    if record is None:
        raise SurgeonError(f"model.surgery: {folder} holds no surgery record (an `inject --out` directory)")
    return record


def load_backbone(recipe, task, offline_model: str | None = None):
    """The model before head/positions/method. offline_model="tiny": a tiny model of the same family
    stands in for a checkpoint that is not available (validate's model check)."""
    m = recipe.model
    if m.surgery and not offline_model:
        from surgeon.api import load

        return load(m.surgery)
    family = model_family(recipe, offline_model)
    from surgeon import built  # models built here are built from a record of how, kept for surgeon.load

    if m.init == "imagenet-vit":
        if m.tiny or offline_model:
            vit = built.tiny_record("vit", "ViTModel", {} if m.tiny else STAND_IN)
        else:
            vit = built.ref_record(m.vit_ref)
        return built.build(built.imagenet_vit_record(vit, m.config))
    if m.tiny or offline_model:
        overrides = dict(m.config) if m.tiny else stand_in_shape(m.ref, family)
        return built.build(built.tiny_record(family, task.model_class(family), overrides))
    from surgeon.hf import load_pretrained
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.io.pickle_checkpoint import is_pickle_path
    from surgeon.refs import resolve

    if resolve(m.ref).is_file() and is_pickle_path(resolve(m.ref)):  # an authors' BEATs .pt
        from surgeon.beats.checkpoint import load_pt

        return load_pt(resolve(m.ref), allow_pickle=m.allow_pickle)
    model_type = (Checkpoint.open(m.ref).config or {}).get("model_type")
    return load_pretrained(m.ref, model_class=task.model_class(family, model_type))


def build_model(recipe, labels: list[str], *, feature_spec=None, offline_model: str | None = None):
    """The trainable model for `labels`: returns (model, feature spec, merge hooks or None).

    feature_spec(model) -> FeatureSpec gives the features the data will deliver; a patch model's
    position table follows the fbank's frequency x time grid (cropped or interpolated from the
    pre-trained table: an AST at another length, a DeiT on spectrograms)."""
    from surgeon.hf import family_of_model
    from surgeon.train.tasks import get_task

    task = get_task(recipe.model.task)
    model = load_backbone(recipe, task, offline_model)
    spec = feature_spec(model) if feature_spec is not None else None
    if spec is not None and spec.kind == "fbank" and family_of_model(model).token_grid is not None:
        from surgeon.positions import fit_patch_grid

        fit_patch_grid(model, spec.num_mel_bins, spec.max_frames)
    task.prepare(model, labels)
    if recipe.model.head is not None:
        from surgeon.heads import set_head

        set_head(model, recipe.model.head)
    _set_attention(model, recipe.train.attention)
    _record_head(model)
    # offline (validate's tiny stand-in) the merge source checkpoint is not there to merge from
    hooks = apply_merge(model, recipe, offline_model) if recipe.merge is not None else None
    if recipe.methods:
        from surgeon.api import inject

        for method in recipe.methods:
            inject(model, method.name, **method.options())
    return model, spec, hooks


def _set_attention(model, kind: str) -> None:
    """train.attention: PyTorch's fused scaled-dot-product attention (transformers' default where the
    model has it) or the model's own eager attention (e.g. to read attention weights)."""
    if getattr(model.config, "_attn_implementation", None) == kind:
        return
    try:
        model.set_attn_implementation(kind)
    except (ValueError, ImportError) as e:
        raise SurgeonError(f"train.attention: {type(model).__name__} cannot use {kind!r} attention "
                           f"({str(e).splitlines()[0]})") from None


def _record_head(model) -> None:
    """A model loaded from a saved surgery keeps the config its surgery was made on (the record that
    `surgeon.load` rebuilds the base from); a new head for this dataset's classes must show there too."""
    from surgeon.methods.surgery import STATE

    state = model.__dict__.get(STATE)
    if state and state.get("config") is not None:
        c = model.config
        state["config"].update(num_labels=c.num_labels, id2label={str(k): v for k, v in c.id2label.items()},
                               label2id=dict(c.label2id))


def method_name(recipe) -> str:
    """The method whose default learning rate applies (the recipe's, else the surgery's first)."""
    if recipe.methods:
        return recipe.methods[0].name
    record = surgery_record(recipe.model.surgery)
    return record["methods"][0]["method"] if record["methods"] else "full"


def apply_merge(model, recipe, offline_model: str | None = None):
    """Attention merging before training ([merge], paper 003): static MAM, or Learnable-MAM hooks.
    Offline (validate's tiny stand-in), a merge source that is not available is stood in for too."""
    from surgeon.speech import recipe_merge

    return recipe_merge.apply(model, recipe.merge, offline_model=offline_model)
