"""BEATs as a surgeon model directory: config.json ({"model_type": "beats", the authors' cfg[, label_dict]})
and model.safetensors with the authors' keys, the shared relative-position table stored once (under layer
0's key: safetensors refuses tensors that share memory) and tied to every layer again on load.

`--format safetensors` of a merge into a BEATs .pt writes one; `surgeon.load(DIR)` (through the family's
loader) and `BEATsModel.save_pretrained(DIR)` read and write it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from surgeon.beats.checkpoint import TABLE, BEATsCheckpoint, build
from surgeon.beats.config import MODEL_TYPE, BEATsConfig
from surgeon.errors import SurgeonError

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
LABELS = "label_dict"


def directory_config(cfg: dict, label_dict: dict | None = None) -> dict:
    """config.json of a BEATs directory: the cfg as it is, model_type, the label_dict when there is one."""
    doc = {"model_type": MODEL_TYPE, **cfg}
    if label_dict is not None:
        doc[LABELS] = {str(k): v for k, v in label_dict.items()}  # JSON keys are strings
    return doc


def untied(keys) -> list[str]:
    """The keys a directory stores: every key but the later layers' copies of the table."""
    first = next((k for k in keys if TABLE.match(k)), None)
    return [k for k in keys if not TABLE.match(k) or k == first]


def save_dir(model, directory: str | os.PathLike) -> Path:
    """Write `model` into an existing directory (BEATsModel.save_pretrained; call inside atomic_output)."""
    from safetensors.torch import save_file

    from surgeon.beats.checkpoint import authors_state_dict

    from surgeon.surgery_keys import method_of_key

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)  # as transformers' save_pretrained does
    state = authors_state_dict(model, surgery_ok=True)
    tensors = {k: state[k].contiguous() for k in untied(state)}
    # a full save of a surgery (surgeon.api.save_surgery(full=True)) keeps the injected modules' tensors too
    tensors.update({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if method_of_key(k)})
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    doc = directory_config(model.config.to_cfg(), getattr(model, "label_dict", None))
    (directory / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    return directory


def load_dir(path: str | os.PathLike, model_class=None):
    """A BEATsModel from a BEATs model directory (the family's loader; model_class is ignored)."""
    from surgeon.io.checkpoint import Checkpoint, read_json

    path = Path(path)
    doc = read_json(path / CONFIG_NAME)
    cfg = {k: v for k, v in doc.items() if k not in ("model_type", LABELS)}
    labels = doc.get(LABELS)
    if labels is not None:
        if not isinstance(labels, dict):
            raise SurgeonError(f"{path / CONFIG_NAME}: label_dict is a {type(labels).__name__}, not a dict")
        labels = {int(k) if str(k).isdigit() else k: v for k, v in labels.items()}
    config = BEATsConfig.from_cfg(cfg, source=str(path / CONFIG_NAME))
    from surgeon.surgery_keys import method_of_key

    # a surgery's tensors are not the model's: surgeon.load puts them back after injecting the method
    state = {k: v for k, v in Checkpoint.open(path).state_dict().items() if not method_of_key(k)}
    # the table again under every layer: one tensor, as the model holds it
    table = next((state[k] for k in state if TABLE.match(k)), None)
    if table is not None:
        for i in range(config.encoder_layers):
            state.setdefault(f"encoder.layers.{i}.self_attn.relative_attention_bias.weight", table)
    return build(BEATsCheckpoint(path, config, state, labels))
