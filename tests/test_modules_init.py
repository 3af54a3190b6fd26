"""Every adapter starts with an exactly zero output (zero up side only) and is not dead: after one
backward its up side has nonzero gradients, and its down side is random, not zero."""
import pytest
import torch

from surgeon.modules import ADAPTERS, TokenLayout

D = 32
LAYOUT = TokenLayout(num_special=2, freq=3, time=5)

BUILD = {
    "bottleneck": lambda: ADAPTERS["bottleneck"](D, 4),
    "convpass": lambda: ADAPTERS["convpass"](D, 4),
    "convpass-2d": lambda: ADAPTERS["convpass"](D, 4, conv="2d"),
    "conformer": lambda: ADAPTERS["conformer"](D, 4, kernel=5),
    "loaa-time": lambda: ADAPTERS["loaa"](D, 4, axis="time"),
    "loaa-frequency": lambda: ADAPTERS["loaa"](D, 4, axis="frequency"),
    "dense-moa": lambda: ADAPTERS["dense-moa"](D, 6, 1),
    "dense-moa-convpass": lambda: ADAPTERS["dense-moa"](D, 6, 2, expert="convpass"),
    "soft-moa": lambda: ADAPTERS["soft-moa"](D, 6, 1),
    "soft-moa-convpass": lambda: ADAPTERS["soft-moa"](D, 6, 2, slots=2, expert="convpass"),
}


def up_and_down(module):
    """(up-side parameters, down-side weights) by the modules' naming."""
    up = [p for n, p in module.named_parameters() if n.startswith(("up", "pointwise_up", "experts.up"))]
    down = [p for n, p in module.named_parameters()
            if n.endswith("weight") and n.startswith(("down", "pointwise_down", "experts.down"))]
    return up, down


def build(name):
    torch.manual_seed(0)
    module = BUILD[name]()
    module.layout = LAYOUT
    return module.train()


@pytest.mark.parametrize("name", sorted(BUILD))
def test_zero_output_and_live_gradients(name):
    module = build(name)
    x = torch.randn(3, LAYOUT.num_tokens, D)
    y = module(x)
    assert y.shape == x.shape
    assert torch.equal(y, torch.zeros_like(y))
    (y * torch.randn_like(y)).sum().backward()
    up, down = up_and_down(module)
    assert up and down
    for p in up:
        assert p.grad is not None and p.grad.abs().sum() > 0
    for w in down:
        assert w.std() > 0


@pytest.mark.parametrize("name", sorted(BUILD))
def test_reset_parameters_returns_to_zero_after_training(name):
    module = build(name)
    x = torch.randn(2, LAYOUT.num_tokens, D)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        (module(x) * x).sum().backward()
        optimizer.step()
    assert module(x).abs().max() > 0
    module.reset_parameters()
    assert torch.equal(module(x), torch.zeros_like(x))
