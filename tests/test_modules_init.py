"""Every adapter starts with an exactly zero output (zero up side only) and is not dead: after one
backward its up side has nonzero gradients, and its down side is random, not zero. And each random
initialisation has the distribution the papers' code gives it (bounds and statistics)."""
import math

import pytest
import torch

from surgeon.modules import ADAPTERS, TokenLayout

D = 32
LAYOUT = TokenLayout(num_special=2, freq=3, time=5)

BUILD = {
    "bottleneck": lambda: ADAPTERS["bottleneck"](D, 4),
    "convpass": lambda: ADAPTERS["convpass"](D, 4),
    "convpass-2d": lambda: ADAPTERS["convpass"](D, 4, conv="2d"),
    "convpass-identity": lambda: ADAPTERS["convpass"](D, 4, conv_init="identity"),
    "convpass-2d-identity": lambda: ADAPTERS["convpass"](D, 4, conv="2d", conv_init="identity"),
    "conformer": lambda: ADAPTERS["conformer"](D, 4, kernel=5),
    "loaa-time": lambda: ADAPTERS["loaa"](D, 4, axis="time"),
    "loaa-frequency": lambda: ADAPTERS["loaa"](D, 4, axis="frequency"),
    "dense-moa": lambda: ADAPTERS["dense-moa"](D, 6, 1),
    "dense-moa-convpass": lambda: ADAPTERS["dense-moa"](D, 6, 2, expert="convpass"),
    "soft-moa": lambda: ADAPTERS["soft-moa"](D, 6, 1),
    "soft-moa-convpass": lambda: ADAPTERS["soft-moa"](D, 6, 2, slots=2, expert="convpass"),
    "dense-moa-convpass-identity": lambda: ADAPTERS["dense-moa"](D, 6, 2, expert="convpass", conv_init="identity"),
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


# -- the distributions -------------------------------------------------------------------------------
def assert_uniform(t, bound):
    """Inside [-bound, bound], filling it (max |x| near the bound), mean 0 and std bound / sqrt(3)
    within five standard errors of n samples (seeded, so the outcome is fixed)."""
    t = t.detach().flatten().double()
    n, std = t.numel(), bound / math.sqrt(3)
    assert t.abs().max() <= bound and t.abs().max() > (1 - 10 / n) * bound
    assert abs(t.mean()) < 5 * std / math.sqrt(n)
    assert t.std() == pytest.approx(std, rel=5 * math.sqrt(0.2 / n))  # a uniform's kurtosis is 9/5


@pytest.mark.parametrize("d", [768, 32])
def test_prompts_and_prefixes_start_as_vpt(d):
    """U(-v, v), v = sqrt(6 / (3 * 16 * 16 + d)): 0.0625 at d = 768 (the authors' code), for any P."""
    from surgeon.methods.prefix import PrefixTokens
    from surgeon.methods.prompt import PromptTokens, vpt_bound

    assert vpt_bound(768) == 0.0625
    torch.manual_seed(0)
    for n in (25, 300):
        assert_uniform(PromptTokens(n, d).prompts, vpt_bound(d))
    prefix = PrefixTokens(12, d, "eager")
    assert_uniform(prefix.key, vpt_bound(d))
    assert_uniform(prefix.value, vpt_bound(d))


@pytest.mark.parametrize("n, p", [(14, 1), (7, 1), (14, 2)])
def test_soft_moa_phi_is_xavier_normal(n, p):
    """Phi (d, N, p) as torch's xavier_normal_ of that shape: std sqrt(2 / (N p + d p)), mean 0."""
    torch.manual_seed(0)
    phi = ADAPTERS["soft-moa"](768, n, 1, slots=p).phi.detach().double()
    std = math.sqrt(2 / (n * p + 768 * p))
    assert phi.std() == pytest.approx(std, rel=0.03)
    assert abs(phi.mean()) < 0.03 * std
    assert (phi.abs() > 3 * std).double().mean() < 0.01  # a normal's tails, not a uniform's box


def conv_weights(module):
    """(weight, bias, b) of a Convpass conv or of a MoA's stacked Convpass convs."""
    if hasattr(module, "conv"):
        return module.conv.weight, module.conv.bias, module.conv.weight.shape[1]
    bank = module.experts
    return bank.conv_weight, bank.conv_bias, bank.bottleneck


CONVS = {
    "convpass": lambda init: ADAPTERS["convpass"](768, 24, conv_init=init),
    "convpass-2d": lambda init: ADAPTERS["convpass"](768, 24, conv="2d", conv_init=init),
    "soft-moa-convpass": lambda init: ADAPTERS["soft-moa"](768, 14, 4, expert="convpass", conv_init=init),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_convpass_conv_is_xavier_or_identity_never_a_mix(name):
    torch.manual_seed(0)
    weight, bias, b = conv_weights(CONVS[name]("xavier"))
    taps = weight[0, 0].numel()
    assert_uniform(weight, math.sqrt(6 / (2 * b * taps)))  # b -> b channels per expert: fan in = fan out
    centre = weight.reshape(weight.shape[0], b, taps)[..., (taps - 1) // 2]
    assert abs(centre.reshape(-1, b, b).diagonal(dim1=1, dim2=2).mean()) < 0.1  # no identity added
    assert torch.equal(bias, torch.zeros_like(bias))

    weight, bias, b = conv_weights(CONVS[name]("identity"))
    flat = weight.reshape(weight.shape[0], b, taps)
    eye = torch.eye(b).repeat(weight.shape[0] // b, 1)
    assert torch.equal(flat[..., (taps - 1) // 2], eye)
    flat = flat.clone()
    flat[..., (taps - 1) // 2] = 0
    assert torch.equal(flat, torch.zeros_like(flat)) and torch.equal(bias, torch.zeros_like(bias))
