"""BEATs checkpoints in the authors' layout: a torch.save dict {cfg, model[, label_dict]}.

Reading refuses the pickle unless allow_pickle (unpickling can run code), then opens it with
torch.load(weights_only=True) (surgeon.io.pickle_checkpoint). The state dict's tensors become the
model's parameters as they are (no copy, no dtype change); the relative-position table, listed once per
layer, must be one table (equal in every layer) and becomes one parameter. Positional-conv weights saved
through torch's parametrisation API (`parametrizations.weight.original0/1`) or with the weight norm
removed (`weight`) are taken too.

Writing gives the authors' layout back: the cfg as read, the same keys in their order, label_dict kept,
the shared table stored once; the authors' `BEATs(BEATsConfig(cfg)).load_state_dict(ckpt["model"])`
loads it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from surgeon.beats.config import BEATsConfig
from surgeon.errors import SurgeonError

CFG, MODEL, LABELS = "cfg", "model", "label_dict"
# keys every BEATs state dict has, whatever its size (the authors' names)
SIGNATURE = ("patch_embedding.weight", "encoder.layers.0.self_attn.q_proj.weight", "encoder.layers.0.fc1.weight")
POS_CONV = "encoder.pos_conv.0."
PARAMETRISED = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
TABLE = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight$")


@dataclass
class BEATsCheckpoint:
    path: Path
    config: BEATsConfig
    state: dict  # the model's state dict, by the authors' key names
    label_dict: dict | None = None


def is_beats_state(obj) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in SIGNATURE)


def is_beats_content(obj) -> bool:
    """{cfg, model[, label_dict]} with BEATs keys in model, or such a state dict alone."""
    return is_beats_state(obj.get(MODEL) if isinstance(obj, dict) else None) or is_beats_state(obj)


def authors_extras(obj) -> dict | None:
    """What a reader taking the state dict itself needs besides it: {cfg[, label_dict]} of an authors'
    {cfg, model[, label_dict]}; for a bare BEATs state dict, the cfg its shapes tell and bare=True (a
    file written back stays bare); None for anything else."""
    if isinstance(obj, dict) and is_beats_state(obj.get(MODEL)):
        return {k: obj[k] for k in (CFG, LABELS) if isinstance(obj.get(k), dict)}
    if is_beats_state(obj):
        try:
            shapes = {k: tuple(v.shape) for k, v in obj.items()}
            return {CFG: BEATsConfig.infer(shapes).settings(), "bare": True}
        except (SurgeonError, AttributeError):
            return None
    return None


# -- reading ----------------------------------------------------------------------------------------
def read_pt(path: str | os.PathLike, *, allow_pickle: bool = False) -> BEATsCheckpoint:
    from surgeon.io.pickle_checkpoint import load_pickle, refuse

    path = Path(path)
    if not allow_pickle:
        raise refuse(path)
    if not path.is_file():
        raise SurgeonError(f"{path}: not a file")
    obj = load_pickle(path)
    return parse(obj, path)


def parse(obj, path: Path) -> BEATsCheckpoint:
    """The checkpoint in a loaded object, checked: {cfg, model[, label_dict]} or a bare state dict."""
    import torch

    if not is_beats_content(obj):
        raise SurgeonError(f"{path}: not a BEATs checkpoint (no {{cfg, model}} dict, nor a state dict, with "
                           f"BEATs keys such as {SIGNATURE[0]}); other models load from safetensors")
    wrapped = is_beats_state(obj.get(MODEL))
    state = dict(obj[MODEL] if wrapped else obj)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise SurgeonError(f"{path}: model[{bad[0]!r}] is a {type(state[bad[0]]).__name__}, not a tensor")
    state = _authors_names(state)
    cfg = obj.get(CFG) if wrapped else None
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    config = BEATsConfig.from_cfg(cfg, source=str(path)) if cfg is not None else BEATsConfig.infer(shapes, str(path))
    labels = obj.get(LABELS) if wrapped else None
    if labels is not None and not isinstance(labels, dict):
        raise SurgeonError(f"{path}: label_dict is a {type(labels).__name__}, not a dict of class labels")
    return BEATsCheckpoint(path, config, state, labels)


def _authors_names(state: dict) -> dict:
    """The positional conv's weight norm as weight_g/weight_v, whatever API saved it."""
    renamed = {k: (POS_CONV + PARAMETRISED[k[len(POS_CONV):]] if k[len(POS_CONV):] in PARAMETRISED else k)
               for k in state}
    state = {renamed[k]: v for k, v in state.items()}
    plain = state.get(POS_CONV + "weight")
    if plain is not None and plain.dim() == 3 and POS_CONV + "weight_v" not in state:
        # weight norm removed: v = w and g = ||w|| give w back
        state[POS_CONV + "weight_g"] = plain.norm(dim=(0, 1), keepdim=True)
        state[POS_CONV + "weight_v"] = state.pop(POS_CONV + "weight")
    return state


def expected_shapes(config: BEATsConfig) -> dict:
    """{key: shape} of a BEATs state dict for `config`, in the authors' order (no memory used)."""
    import torch

    from surgeon.beats.model import BEATsModel

    with torch.device("meta"):
        model = BEATsModel(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state(state: dict, config: BEATsConfig, source) -> None:
    """One-line errors for a state dict that does not fit the configuration."""
    import torch

    want = expected_shapes(config)
    missing = [k for k in want if k not in state]
    if missing:
        raise SurgeonError(f"{source}: no {missing[0]!r} ({len(missing)} keys missing for a BEATs model with "
                           f"{config.encoder_layers} layers of {config.encoder_embed_dim}"
                           f"{', a predictor' if config.finetuned_model else ''})")
    extra = [k for k in state if k not in want]
    if extra:
        why = "; cfg says finetuned_model is false" if extra[0].startswith("predictor.") else ""
        raise SurgeonError(f"{source}: {extra[0]!r} has no place in a BEATs model with this cfg "
                           f"({len(extra)} unexpected keys{why})")
    for k, shape in want.items():
        if tuple(state[k].shape) != shape:
            raise SurgeonError(f"{source}: {k!r} has shape {list(state[k].shape)}, the cfg makes it {list(shape)}")
        if not state[k].is_floating_point():
            raise SurgeonError(f"{source}: {k!r} is {state[k].dtype}, not a float tensor")
    tables = sorted((int(m[1]), k) for k in state if (m := TABLE.match(k)))
    for i, k in tables[1:]:
        if not torch.equal(state[k], state[tables[0][1]]):
            raise SurgeonError(f"{source}: the relative-position table of layer {i} differs from layer "
                               f"{tables[0][0]}'s; BEATs shares one table across all layers")


def build(ckpt: BEATsCheckpoint):
    """The BEATsModel holding the checkpoint's tensors (eval mode)."""
    import torch

    from surgeon.beats.model import BEATsModel

    check_state(ckpt.state, ckpt.config, ckpt.path)
    with torch.device("meta"):
        model = BEATsModel(ckpt.config, label_dict=ckpt.label_dict)
    # every layer's table entry assigns the one shared module: all equal (checked), one parameter after
    model.load_state_dict(ckpt.state, strict=True, assign=True)
    return model.eval()


def load_pt(path: str | os.PathLike, *, allow_pickle: bool = False):
    """A BEATsModel from an authors' .pt checkpoint; refused unless allow_pickle."""
    model = build(read_pt(path, allow_pickle=allow_pickle))
    model.config._name_or_path = str(path)  # where it came from, as transformers' configs say: a surgery's base
    return model


# -- writing ----------------------------------------------------------------------------------------
def authors_state_dict(model, *, surgery_ok: bool = False) -> dict:
    """The model's state dict in the authors' layout, on the CPU, shared tensors still shared; refuses
    tensors that layout has no place for (injected modules, unless surgery_ok: then left out) and shapes
    its cfg does not give."""
    from surgeon.surgery_keys import method_of_key

    sd = model.state_dict()
    config = BEATsConfig.from_cfg(model.config.to_cfg(), source="the model's cfg")
    want = expected_shapes(config)
    extra = [k for k in sd if k not in want and not (surgery_ok and method_of_key(k))]
    if extra:
        raise SurgeonError(f"the model carries {len(extra)} tensors the authors' layout has no place for "
                           f"(first: {extra[0]}); strip the surgery before saving a .pt")
    check_state({k: v for k, v in sd.items() if k in want}, config, "the model")
    moved: dict = {}

    def on_cpu(t):
        if t.device.type == "cpu":
            return t
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key not in moved:  # one copy per shared tensor (the table of every layer)
            moved[key] = t.to("cpu")
        return moved[key]

    return {k: on_cpu(sd[k]) for k in want}


def save_pt(model, out: str | os.PathLike, *, force: bool = False, inputs=()) -> Path:
    """Write `model` as an authors' .pt ({cfg, model[, label_dict]}), atomically."""
    import torch

    from surgeon.io.atomic import atomic_output

    doc = {CFG: model.config.to_cfg(), MODEL: authors_state_dict(model)}
    if getattr(model, "label_dict", None) is not None:
        doc[LABELS] = model.label_dict
    with atomic_output(out, force=force, inputs=inputs, directory=False) as tmp:
        try:
            torch.save(doc, tmp)
        except OSError as e:
            raise SurgeonError(f"{out}: cannot write the checkpoint: {e.strerror or e}") from None
    return Path(out)
