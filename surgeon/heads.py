"""The classification head a recipe trains (`[model] head`).

"pooled" is transformers' own head (AST: the mean of CLS and DIST, then the classifier's LayerNorm and
Linear). "mean" is the PETL papers' head (papers 001/002 and the authors' code): one Linear over the mean
of the whole output sequence taken after the encoder's final LayerNorm, and that LayerNorm trains.

Which positions the mean covers:
- AST: every output position, [CLS, DIST, patches]. With prompt tuning the prompt outputs are averaged
  too (as the authors' code does), taken at the last layer before the prompt method drops them and put
  through the final LayerNorm like every other position; a DIST slot the prompt method refilled with a
  copy of CLS (`dist = false`, [CLS, P, patches]) is left out, so the mean is over [CLS, P, patches].
- speech encoders (HuBERT, wav2vec 2.0, WavLM, ...): transformers' head already averages the frames that
  are not padding; "mean" removes its projector so the Linear sits directly on that mean. Prompt outputs
  are not pooled there (the papers prompt-tune AST only).

The choice is kept in the model's config (`surgeon_head`), so a saved surgery or a full save is rebuilt
with the same head by `surgeon.load` (restore_head). What differs per family is the table MEAN_HEADS.
"""
from __future__ import annotations

from dataclasses import dataclass

from surgeon.errors import SurgeonError

HEADS = ("mean", "pooled")
CONFIG_KEY = "surgeon_head"
POOL_FLAG = "_surgeon_pool_prompts"  # on the last layer: the prompt method leaves its outputs for the mean
POOL_STASH = "_surgeon_prompt_outputs"  # (prompt outputs, refilled slot start, refilled count)
APPLIED = "_surgeon_mean_head"


@dataclass(frozen=True)
class MeanHead:
    pool: str  # "sequence": surgeon averages the base model's output; "own": the class already averages
    removed: tuple[str, ...]  # head modules that become the identity
    linear: str  # the head's Linear, rebuilt as Linear(hidden size, classes)
    sized_by: str | None = None  # the config key of that Linear's input size, set to the hidden size so
    # that transformers rebuilds the head in the same shapes from the saved config


_SPEECH = MeanHead("own", ("projector",), "classifier", sized_by="classifier_proj_size")
MEAN_HEADS = {
    "ast": MeanHead("sequence", ("classifier.layernorm",), "classifier.dense"),
    **{name: _SPEECH for name in ("hubert", "wav2vec2", "wavlm", "unispeech-sat", "data2vec-audio")},
}


def head_of(model) -> str:
    return getattr(model.config, CONFIG_KEY, None) or "pooled"


def set_head(model, kind: str) -> None:
    """Give a classification model the head `kind` (after the task has sized it for the classes)."""
    if kind not in HEADS:
        raise SurgeonError(f"model.head: {kind!r} is not a head (known: {', '.join(HEADS)})")
    if kind == head_of(model):
        if kind == "mean" and not model.__dict__.get(APPLIED):
            _apply(model)
        return
    if kind == "pooled":
        raise SurgeonError("model.head: this model already carries the mean head")
    _apply(model)


def restore_head(model) -> None:
    """Re-apply a recorded mean head to a model rebuilt from its config (surgeon.load)."""
    if head_of(model) == "mean" and not model.__dict__.get(APPLIED):
        _apply(model)


def trains_final_norm(model) -> bool:
    return head_of(model) == "mean"


def _apply(model) -> None:
    import torch

    from surgeon.methods.target import Target

    target = Target(model)
    spec = MEAN_HEADS.get(target.family.name)
    if spec is None or target.bare:
        raise SurgeonError(f"model.head: the mean head is not available for {target.family.name} "
                           f"(available: {', '.join(sorted(MEAN_HEADS))}); use head = 'pooled'")
    for path in spec.removed:
        parent, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, torch.nn.Identity())
    parent_path, _, attr = spec.linear.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    if old.in_features != target.hidden_size:
        new = torch.nn.Linear(target.hidden_size, old.out_features, bias=old.bias is not None)
        setattr(parent, attr, new.to(old.weight.device, old.weight.dtype))
    if spec.sized_by:
        setattr(model.config, spec.sized_by, target.hidden_size)
    if spec.pool == "sequence":
        last = target.module(target.num_layers - 1)
        last.__dict__[POOL_FLAG] = True
        norm = target.final_norm_path()
        norm = model.get_submodule(norm) if norm else torch.nn.Identity()
        target.base.register_forward_hook(_MeanPool(last, norm))
    setattr(model.config, CONFIG_KEY, "mean")
    model.__dict__[APPLIED] = True


class _MeanPool:
    """Forward hook on the base model: its pooled output becomes the mean over the positions above."""

    def __init__(self, last_layer, norm):
        self.last, self.norm = last_layer, norm

    def __call__(self, module, args, output):
        seq = output[0] if isinstance(output, tuple) else output.last_hidden_state
        stash = self.last.__dict__.pop(POOL_STASH, None)
        parts = [seq]
        if stash is not None:
            prompts, start, refilled = stash
            if refilled:
                parts = [seq[:, :start], seq[:, start + refilled:]]
            parts.append(self.norm(prompts))
        total = sum(p.sum(dim=1) for p in parts)
        pooled = total / sum(p.shape[1] for p in parts)
        if isinstance(output, tuple):
            return (output[0], pooled, *output[2:])
        output.pooler_output = pooled
        return output
