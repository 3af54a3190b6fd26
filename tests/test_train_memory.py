"""A frozen backbone costs no training memory beyond its weights (issue 7): frozen parameters get no
gradient and no optimiser state, and nothing is saved for backward below the first trainable module.

Saved tensors are counted with `torch.autograd.graph.saved_tensors_hooks`, attributed to the part of the
model that was running when autograd saved them (the embeddings, encoder layer i, or the top: final
LayerNorm and head), leaving out the parameters themselves (saved by reference, they cost nothing).
The methods have no option to go on some layers only, so "a method on the last layer only" is the method
injected everywhere with its parameters (and the LayerNorms it unfreezes) frozen in the other layers.
"""
from __future__ import annotations

import re

import pytest
import torch

import surgeon.api as api
from surgeon.methods.target import Target
from surgeon.tiny import build_tiny
from surgeon.train.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYERS = 4
METHODS = {  # the papers' defaults, at the tiny model's width
    "bottleneck": {"placement": "pfeiffer"},
    "soft-moa": {"num_experts": 14, "bottleneck": 1},
    "lora": {"targets": ["q", "v"]},
    "linear": {},
    "full": {},
}


def tiny_ast(method: str, last_layer_only: bool = False):
    model = build_tiny("ast", model_class="ASTForAudioClassification", num_hidden_layers=LAYERS, max_length=100)
    api.inject(model, method, **METHODS[method])
    if last_layer_only:
        for name, p in model.named_parameters():
            layer = re.search(r"\.layers\.(\d+)\.", name)
            if layer and int(layer.group(1)) < LAYERS - 1:
                p.requires_grad_(False)
    return model.train()


def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 100, 128, generator=gen), torch.tensor([0, 1])


def saved_bytes_by_part(model) -> tuple[dict, torch.Tensor]:
    """({"embeddings" | "layer i" | "top": bytes saved for backward while it ran}, loss)."""
    target = Target(model)
    parts = {"embeddings": model.audio_spectrogram_transformer.embeddings,
             **{f"layer {i}": layer for i, layer in enumerate(target.layers)},
             "top": model.audio_spectrogram_transformer.layernorm}
    current = ["input"]
    handles = [module.register_forward_pre_hook(lambda *_, name=name: current.__setitem__(0, name))
               for name, module in parts.items()]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[str, dict] = {name: {} for name in ["input", *parts]}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[current[0]][storage.data_ptr()] = storage.nbytes()
        return t

    x, labels = batch()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = torch.nn.functional.cross_entropy(model(input_values=x).logits, labels)
    finally:
        for h in handles:
            h.remove()
    return {name: sum(s.values()) for name, s in saved.items()}, loss


@pytest.mark.parametrize("method", list(METHODS))
def test_frozen_parameters_get_no_gradient_and_no_optimiser_state(method):
    model = tiny_ast(method)
    groups = api.parameter_groups(model)
    optimizer = build_optimizer(groups, {g: 1e-3 for g in groups})
    x, labels = batch()
    torch.nn.functional.cross_entropy(model(input_values=x).logits, labels).backward()
    optimizer.step()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert method == "full" or frozen, "the method should freeze the backbone"
    assert [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None] == []
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == trainable
    assert {id(p) for p in optimizer.state} == trainable  # AdamW's moments: trainable parameters only
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["bottleneck", "lora"])
def test_nothing_is_saved_for_backward_below_the_first_trainable_layer(method):
    everywhere, _ = saved_bytes_by_part(tiny_ast(method))
    last, loss = saved_bytes_by_part(tiny_ast(method, last_layer_only=True))
    assert all(everywhere[f"layer {i}"] > 0 for i in range(LAYERS))
    assert [part for part in ("input", "embeddings", *(f"layer {i}" for i in range(LAYERS - 1))) if last[part]] == []
    assert last[f"layer {LAYERS - 1}"] > 0
    assert sum(last.values()) < 0.4 * sum(everywhere.values())  # about 1/LAYERS of it
    loss.backward()  # what was saved is enough to train the last layer


def test_a_linear_probe_saves_nothing_in_the_encoder():
    probe, _ = saved_bytes_by_part(tiny_ast("linear"))
    full, _ = saved_bytes_by_part(tiny_ast("full"))
    assert [part for part, n in probe.items() if n and part != "top"] == []
    assert 0 < probe["top"] < 0.01 * sum(full.values())  # the head's input: one [batch, d] vector
