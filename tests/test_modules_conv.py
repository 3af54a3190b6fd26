"""The convolutional adapters use their convolutions, along the right axis, and the Conformer adapter
its LayerNorm (the reference code computed both and discarded them); TokenLayout's grid order."""
import pytest
import torch
import torch.nn.functional as F

from surgeon.errors import SurgeonError
from surgeon.modules import Bottleneck, ConformerAdapter, Convpass, LookAsideAdapter, TokenLayout

D = 16
LAYOUT = TokenLayout(num_special=2, freq=4, time=6)


def randomize(module, std=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


def changed_tokens(module, x, index):
    """Indices of output tokens that change when input token `index` is perturbed."""
    x2 = x.clone()
    x2[:, index] += torch.randn(D)
    with torch.no_grad():
        diff = (module(x2) - module(x)).abs().amax(dim=(0, 2))
    return set(torch.nonzero(diff > 1e-6).flatten().tolist())


def token(f, t):
    return LAYOUT.num_special + f * LAYOUT.time + t


def test_layout_is_frequency_major_and_round_trips():
    x = torch.arange(LAYOUT.num_tokens, dtype=torch.float32).reshape(1, -1, 1).expand(2, -1, 3)
    special, grid = LAYOUT.split(x)
    assert special.shape == (2, 2, 3) and grid.shape == (2, 4, 6, 3)
    assert grid[0, 1, 2, 0] == token(1, 2)
    assert torch.equal(LAYOUT.merge(special, grid), x)
    with pytest.raises(SurgeonError, match="expected"):
        LAYOUT.split(torch.zeros(2, LAYOUT.num_tokens + 1, 3))


def test_grid_modules_need_a_layout():
    with pytest.raises(SurgeonError, match="no token layout"):
        LookAsideAdapter(D, 4)(torch.zeros(1, LAYOUT.num_tokens, D))


def test_bottleneck_is_token_wise():
    module = randomize(Bottleneck(D, 4))
    assert changed_tokens(module, torch.randn(2, 10, D), 5) == {5}


def test_convpass_1d_convolves_over_tokens():
    module = randomize(Convpass(D, 4))
    x = torch.randn(2, 10, D)
    assert changed_tokens(module, x, 5) == {4, 5, 6}      # kernel 3 over the token axis
    before = module(x)
    with torch.no_grad():
        module.conv.weight.add_(torch.randn_like(module.conv.weight))
    assert not torch.allclose(module(x), before)           # the convolution's result is used
    h = F.linear(x, module.down.weight, module.down.bias)
    h = h * torch.sigmoid(1.702 * h)
    h = F.conv1d(h.transpose(1, 2), module.conv.weight, module.conv.bias, padding=1).transpose(1, 2)
    h = h * torch.sigmoid(1.702 * h)
    torch.testing.assert_close(module(x), F.linear(h, module.up.weight, module.up.bias))


def test_convpass_2d_convolves_over_the_patch_grid():
    module = randomize(Convpass(D, 4, conv="2d"))
    module.layout = LAYOUT
    x = torch.randn(2, LAYOUT.num_tokens, D)
    expected = {token(f, t) for f in (1, 2, 3) for t in (2, 3, 4)}   # 3x3 neighbourhood of (2, 3)
    assert changed_tokens(module, x, token(2, 3)) == expected
    assert changed_tokens(module, x, token(0, 0)) == {token(f, t) for f in (0, 1) for t in (0, 1)}
    assert changed_tokens(module, x, 1) == {1}                         # special tokens stay apart
    assert sum(p.numel() for p in module.parameters()) == 2 * D * 4 + D + 4 + 9 * 16 + 4


@pytest.mark.parametrize("axis, neighbours", [
    ("time", {(2, t) for t in (1, 2, 3, 4, 5)}),          # two 1x3 convs: +-2 along time only
    ("frequency", {(f, 3) for f in (0, 1, 2, 3)}),        # two 3x1 convs: +-2 along frequency only
])
def test_look_aside_adapter_convolves_along_one_axis(axis, neighbours):
    module = randomize(LookAsideAdapter(D, 4, axis=axis))
    module.layout = LAYOUT
    x = torch.randn(2, LAYOUT.num_tokens, D)
    assert changed_tokens(module, x, token(2, 3)) == {token(f, t) for f, t in neighbours}
    assert changed_tokens(module, x, 0) == {0}
    kernel = (1, 3) if axis == "time" else (3, 1)
    assert module.down.weight.shape == (4, D, *kernel) and module.up.weight.shape == (D, 4, *kernel)


def test_look_aside_adapter_equals_eq_2_on_the_grid():
    """f(h U_down) U_up with U as 2-D convolutions over the [F, T] image; a special token sees the centre tap."""
    module = randomize(LookAsideAdapter(D, 4, axis="time"))
    module.layout = LAYOUT
    x = torch.randn(2, LAYOUT.num_tokens, D)
    image = x[:, 2:].reshape(2, 4, 6, D).permute(0, 3, 1, 2)
    h = F.gelu(F.conv2d(image, module.down.weight, module.down.bias, padding=(0, 1)))
    out = F.conv2d(h, module.up.weight, module.up.bias, padding=(0, 1)).permute(0, 2, 3, 1).reshape(2, 24, D)
    s = F.gelu(F.linear(x[:, :2], module.down.weight[:, :, 0, 1], module.down.bias))
    s = F.linear(s, module.up.weight[:, :, 0, 1], module.up.bias)
    torch.testing.assert_close(module(x), torch.cat([s, out], dim=1))


def test_conformer_adapter_order_of_operations():
    module = randomize(ConformerAdapter(D, 4, kernel=5)).train()
    x = torch.randn(3, 12, D)
    h = F.layer_norm(x, (D,), module.norm.weight, module.norm.bias)
    h = F.glu(F.linear(h, module.pointwise_down.weight, module.pointwise_down.bias), dim=-1)
    h = F.conv1d(h.transpose(1, 2), module.depthwise.weight, module.depthwise.bias, padding=2, groups=4)
    h = F.silu(F.batch_norm(h, None, None, module.batch_norm.weight, module.batch_norm.bias, training=True))
    torch.testing.assert_close(module(x), F.linear(h.transpose(1, 2), module.pointwise_up.weight,
                                                   module.pointwise_up.bias))


def test_conformer_adapter_uses_its_layernorm_and_depthwise_conv():
    module = randomize(ConformerAdapter(D, 4, kernel=5)).eval()
    x = torch.randn(2, 12, D)
    torch.testing.assert_close(module(4 * x + 1), module(x), atol=1e-4, rtol=0)  # normalised first
    assert changed_tokens(module, x, 6) == {4, 5, 6, 7, 8}                        # kernel 5, 'same'
    before = module(x)
    with torch.no_grad():
        module.norm.weight.mul_(2)
    assert not torch.allclose(module(x), before)


def test_even_kernel_keeps_the_length():
    """Paper 001 uses k = 8 for audio: 'same' padding keeps the sequence length with an even kernel too."""
    x = torch.randn(2, 9, D)
    assert randomize(ConformerAdapter(D, 4, kernel=8))(x).shape == x.shape


@pytest.mark.parametrize("bad, message", [
    (lambda: Convpass(D, 4, conv="3d"), "conv"),
    (lambda: LookAsideAdapter(D, 4, axis="space"), "axis"),
    (lambda: ConformerAdapter(D, 0), "bottleneck"),
    (lambda: ConformerAdapter(D, 4, kernel=0), "kernel"),
    (lambda: TokenLayout(1, 0, 3), "token layout"),
])
def test_bad_options(bad, message):
    with pytest.raises(SurgeonError, match=message):
        bad()


def test_grid_without_special_tokens():
    module = randomize(LookAsideAdapter(D, 4, axis="frequency"))
    module.layout = TokenLayout(num_special=0, freq=3, time=4)
    assert module(torch.randn(2, 12, D)).shape == (2, 12, D)


def _train_padded(module, items, length):
    """The Conformer adapter in training mode on `items` ([L_i, D] each) padded with noise to `length`,
    under their frame mask: (outputs at the real frames, running mean, running var)."""
    from surgeon.modules.padding import set_mask

    x = torch.randn(len(items), length, D) * 5  # the padding is noise: it must count for nothing
    keep = torch.zeros(len(items), length, dtype=torch.bool)
    for i, item in enumerate(items):
        x[i, : len(item)], keep[i, : len(item)] = item, True
    module.batch_norm.reset_running_stats()
    set_mask(keep)
    try:
        out = module(x)
    finally:
        set_mask(None)
    return [out[i, : len(item)] for i, item in enumerate(items)], module.batch_norm.running_mean.clone(), \
        module.batch_norm.running_var.clone()


def test_conformer_batchnorm_statistics_leave_padding_out_in_training():
    """In training, BatchNorm's batch statistics and running statistics come from the real frames only:
    the same clips padded to two lengths (with different noise as padding) give the same outputs and the
    same running statistics; and they are the statistics of the real frames gathered."""
    torch.manual_seed(0)
    module = randomize(ConformerAdapter(D, 4, kernel=3)).train()
    items = [torch.randn(n, D) for n in (9, 5, 7)]
    short, mean_s, var_s = _train_padded(module, items, 9)
    long, mean_l, var_l = _train_padded(module, items, 14)
    for a, b in zip(short, long):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mean_s, mean_l)
    torch.testing.assert_close(var_s, var_l)
    # against torch's BatchNorm on the real frames gathered (each clip's conv taken on its own, zero padded)
    bn = module.batch_norm
    convs = []
    for item in items:
        h = module.glu(module.pointwise_down(module.norm(item[None])))
        convs.append(module.depthwise(F.pad(h.transpose(1, 2), module.padding)))
    gathered = torch.cat(convs, dim=2)  # [1, b, N]
    reference = torch.nn.BatchNorm1d(4).train()
    reference.load_state_dict({**bn.state_dict(), "running_mean": torch.zeros(4), "running_var": torch.ones(4),
                               "num_batches_tracked": torch.tensor(0)})
    with torch.no_grad():
        normed = reference(gathered)
    torch.testing.assert_close(mean_s, reference.running_mean)
    torch.testing.assert_close(var_s, reference.running_var)
    want = module.pointwise_up(module.swish(normed).transpose(1, 2))[0]
    torch.testing.assert_close(torch.cat(short), want, atol=1e-5, rtol=1e-5)


def test_conformer_batchnorm_without_padding_is_torchs():
    from surgeon.modules.conformer import MaskedBatchNorm1d
    from surgeon.modules.padding import set_mask

    torch.manual_seed(0)
    x = torch.randn(3, 4, 10)
    ours, theirs = MaskedBatchNorm1d(4).train(), torch.nn.BatchNorm1d(4).train()
    set_mask(torch.ones(3, 10, dtype=torch.bool))
    try:
        assert torch.equal(ours(x, torch.ones(3, 10, dtype=torch.bool)), theirs(x))
    finally:
        set_mask(None)
    assert torch.equal(ours(x), theirs(x)) and torch.equal(ours.running_var, theirs.running_var)
    assert set(ours.state_dict()) == set(theirs.state_dict())  # saved adapters load either way
