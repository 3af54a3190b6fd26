"""Dense-MoA and Soft-MoA against direct, loop-based transcriptions of paper 000's eqs. 1-4, with each
expert rebuilt as a single Bottleneck / Convpass module from its slice of the stacked weights."""
import pytest
import torch

from surgeon.errors import SurgeonError
from surgeon.modules import Bottleneck, Convpass, DenseMoA, SoftMoA

D, B, T = 16, 3, 11


def randomize(module, std=0.2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


def expert_module(bank, i):
    """Expert i of a stacked bank as a stand-alone single adapter."""
    b = bank.bottleneck
    single = Bottleneck(D, b) if bank.expert == "bottleneck" else Convpass(D, b, kernel=bank.conv_weight.shape[-1])
    with torch.no_grad():
        single.down.weight.copy_(bank.down_weight[i].T)
        single.down.bias.copy_(bank.down_bias[i])
        single.up.weight.copy_(bank.up_weight[i].T)
        single.up.bias.copy_(bank.up_bias[i])
        if bank.expert == "convpass":
            single.conv.weight.copy_(bank.conv_weight[i * b:(i + 1) * b])
            single.conv.bias.copy_(bank.conv_bias[i * b:(i + 1) * b])
    return single


def dense_reference(moa, x):
    """Eqs. 1-2 token by token: g = softmax(x W) per token; y = sum_i g_i E_i(X)."""
    experts = [expert_module(moa.experts, i) for i in range(moa.experts.num_experts)]
    outputs = [e(x) for e in experts]  # each expert sees the whole sequence (Convpass convolves over it)
    y = torch.zeros_like(x)
    weights = torch.zeros(x.shape[0], len(experts))
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            logits = x[b, t] @ moa.router.weight.T + moa.router.bias
            g = torch.exp(logits) / torch.exp(logits).sum()
            weights[b] += g / x.shape[1]
            for i in range(len(experts)):
                y[b, t] += g[i] * outputs[i][b, t]
    return y, weights


def soft_reference(moa, x):
    """Eqs. 3-4 sample by sample in matrix form: logits = X Phi (d x N*p); D = column softmax (over
    tokens); C = row softmax (over the N*p slots); X~ = D^T X; expert i gets slots i*p..i*p+p-1; Y = C Y~."""
    n, p = moa.num_experts, moa.slots
    experts = [expert_module(moa.experts, i) for i in range(n)]
    phi = moa.phi.reshape(D, n * p)
    ys, weights = [], []
    for X in x:
        if moa.normalize:
            logits = moa.scale * (X / X.norm(dim=1, keepdim=True)) @ (phi / phi.norm(dim=0, keepdim=True))
        else:
            logits = X @ phi
        e = torch.exp(logits)
        dispatch = e / e.sum(dim=0, keepdim=True)
        combine = e / e.sum(dim=1, keepdim=True)
        slots_in = dispatch.T @ X                                   # [N*p, d]
        slots_out = torch.zeros_like(slots_in)
        for i in range(n):  # slot j belongs to expert j // p
            slots_out[i * p:(i + 1) * p] = experts[i](slots_in[i * p:(i + 1) * p].unsqueeze(0))[0]
        ys.append(combine @ slots_out)
        weights.append(combine.reshape(-1, n, p).sum(dim=2).mean(dim=0))
    return torch.stack(ys), torch.stack(weights)


@pytest.mark.parametrize("expert", ["bottleneck", "convpass"])
def test_dense_moa_equals_equations_1_2(expert):
    torch.manual_seed(0)
    moa = randomize(DenseMoA(D, 5, 3, expert=expert))
    x = torch.randn(B, T, D)
    y = moa(x)
    ref, weights = dense_reference(moa, x)
    assert y.abs().max() > 0.1
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(moa.last_expert_weights, weights, atol=1e-6, rtol=0)


@pytest.mark.parametrize("expert", ["bottleneck", "convpass"])
@pytest.mark.parametrize("slots", [1, 3])
@pytest.mark.parametrize("normalize", [False, True])
def test_soft_moa_equals_equations_3_4(expert, slots, normalize):
    torch.manual_seed(0)
    moa = randomize(SoftMoA(D, 4, 3, slots=slots, expert=expert, normalize=normalize))
    x = torch.randn(B, T, D)
    y = moa(x)
    ref, weights = soft_reference(moa, x)
    assert y.abs().max() > 0.1
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(moa.last_expert_weights, weights, atol=1e-6, rtol=0)


def test_normalized_logits_differ_and_ignore_token_scale():
    """With l2-normalised logits, scaling a token does not change its routing (only its value)."""
    plain = randomize(SoftMoA(D, 4, 2))
    normed = randomize(SoftMoA(D, 4, 2, normalize=True))
    x = torch.randn(B, T, D)
    assert not torch.allclose(plain(x), normed(x))
    torch.testing.assert_close(normed.logits(3 * x), normed.logits(x), atol=1e-5, rtol=0)
    assert not torch.allclose(plain.logits(3 * x), plain.logits(x))


@pytest.mark.parametrize("cls", [DenseMoA, SoftMoA])
def test_last_expert_weights_rows_sum_to_one(cls):
    moa = randomize(cls(D, 6, 2))
    moa(torch.randn(B, T, D))
    w = moa.last_expert_weights
    assert w.shape == (B, 6) and not w.requires_grad
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(B))


def graph_size(module, x):
    """Number of autograd nodes behind the output."""
    seen, stack = set(), [module(x).sum().grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(f for f, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize("cls", [DenseMoA, SoftMoA])
@pytest.mark.parametrize("expert", ["bottleneck", "convpass"])
def test_experts_are_batched_not_looped(cls, expert):
    """The computation graph does not grow with the number of experts: one einsum / grouped conv each."""
    x = torch.randn(2, T, D)
    assert graph_size(cls(D, 2, 2, expert=expert), x) == graph_size(cls(D, 9, 2, expert=expert), x)


@pytest.mark.parametrize("bad, message", [
    (lambda: SoftMoA(D, 0, 1), "num_experts"),
    (lambda: SoftMoA(D, 4, 1, slots=0), "slots"),
    (lambda: DenseMoA(D, 4, 1, expert="lora"), "expert"),
    (lambda: DenseMoA(D, 4, D + 1), "larger than the hidden size"),
    (lambda: DenseMoA(D, 4, 1, expert="convpass", kernel=0), "kernel"),
    (lambda: SoftMoA(D, 4, 1, expert="convpass", kernel=0), "kernel"),
])
def test_bad_options(bad, message):
    with pytest.raises(SurgeonError, match=message):
        bad()
