"""PETL on BEATs through the family's roles: identity at initialisation and inject -> strip bit for bit for
the adapters (MHSA and the fc1 -> fc2 span), LoRA, BitFit, full; prefix tuning read by BEATs' own
attention (checked against the attention written out); only the method and the predictor train; prompts
and LoAA refused with one line."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from surgeon.beats.fixtures import build_tiny
from surgeon.errors import SurgeonError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IDENTITY = [
    ("bottleneck", {}),
    ("bottleneck", {"placement": "houlsby", "insertion": "sequential"}),
    ("bottleneck", {"location": "ffn"}),
    ("convpass", {"placement": "houlsby"}),
    ("conformer", {"location": "ffn", "insertion": "sequential"}),
    ("dense-moa", {}),
    ("soft-moa", {"placement": "houlsby"}),
    ("lora", {"targets": ["q", "k", "v", "o"], "rank": 2}),
    ("bitfit", {}),
    ("full", {}),
    ("loaa", {}),
    ("loaa", {"axis": "grid"}),
    ("convpass", {"conv": "2d"}),
]


@pytest.fixture(scope="module")
def base():
    model = build_tiny(predictor_class=3)
    with torch.no_grad():  # a predictor that is not near zero, so differences show in the logits
        model.predictor.weight.mul_(5.0)
    return model


def wav(batch=2, n=8_000):
    return 0.1 * torch.randn(batch, n, generator=torch.Generator().manual_seed(1))


def logits(model, **kw):
    with torch.no_grad():
        return model(input_values=wav(), **kw).logits


def injected(base, method, opts):
    from surgeon.api import inject

    model = copy.deepcopy(base)
    inject(model, method, **opts)
    return model


def assert_same_state(model, base):
    a, b = model.state_dict(), base.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert "_surgeon" not in model.__dict__


@pytest.mark.parametrize("method, opts", IDENTITY, ids=lambda x: x if isinstance(x, str) else str(x))
def test_identity_at_init_and_strip(base, method, opts):
    from surgeon.api import strip

    model = injected(base, method, opts)
    mask = torch.zeros(2, 8_000, dtype=torch.bool)
    mask[1, 5_000:] = True
    for kw in ({}, {"padding_mask": mask}):
        torch.testing.assert_close(logits(model, **kw), logits(base, **kw), atol=1e-6, rtol=0)
    strip(model)
    assert_same_state(model, base)
    from surgeon.beats.checkpoint import authors_state_dict

    assert list(authors_state_dict(model)) == list(base.state_dict())  # the authors' layout again


@pytest.mark.parametrize("method, opts", IDENTITY + [("prefix", {"num_tokens": 4})],
                         ids=lambda x: x if isinstance(x, str) else str(x))
def test_only_the_method_and_the_predictor_train(base, method, opts):
    model = injected(base, method, opts)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"predictor.weight", "predictor.bias"} <= trainable
    if method not in ("bitfit", "full"):
        assert any(".surgeon_" in n for n in trainable)
    assert not any("patch_embedding" in n for n in trainable) or method == "full"
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(2):
        opt.zero_grad()
        model(input_values=wav()).logits.pow(2).mean().backward()
        opt.step()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), f"frozen {n} changed"


def test_prefix_is_attention_over_the_prefixed_keys_and_values(base):
    """One layer's attention with a prefix against softmax(q [P_k; K]^T / sqrt(hd) + [0, gated bias]) [P_v; V]."""
    from surgeon.api import strip

    model = injected(base, "prefix", {"num_tokens": 4})
    attn = model.encoder.layers[1].self_attn
    prefix = attn.surgeon_prefix
    with torch.no_grad():
        prefix.key.normal_()
        prefix.value.normal_()
    x = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(2))
    bias = model.encoder.layers[0].self_attn.position_bias(10)
    with torch.no_grad():
        got = attn(x, None, bias)
        h, hd = attn.num_heads, attn.head_dim
        q = attn.q_proj(x).view(10, h, hd).transpose(0, 1)
        k = torch.cat([prefix.key, attn.k_proj(x)[0]]).view(12, h, hd).transpose(0, 1)
        v = torch.cat([prefix.value, attn.v_proj(x)[0]]).view(12, h, hd).transpose(0, 1)
        gate = attn.gate(q.unsqueeze(0))[0]  # [h, 10, 1]
        full_bias = torch.cat([torch.zeros(h, 10, 2), gate * bias], dim=-1)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + full_bias, dim=-1)
        want = attn.out_proj((weights @ v).transpose(0, 1).reshape(1, 10, 32))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.equal(logits(model), logits(base))  # not an identity: the prefix keys take attention
    strip(model)
    assert_same_state(model, base)


@pytest.mark.parametrize("method, words", [("prompt", "relative position bias")])
def test_what_beats_cannot_take_is_refused(base, method, words):
    from surgeon.api import inject

    model = copy.deepcopy(base)
    with pytest.raises(SurgeonError, match=words):
        inject(model, method)
    assert "_surgeon" not in model.__dict__


def test_surgery_on_a_pt_saves_and_loads_exactly(tmp_path):
    """A surgery on an authors' .pt: adapter-only (the .pt its recorded base, read again with allow_pickle)
    and full (a BEATs model directory with the surgery's tensors); stripping the full save gives the .pt's
    weights back, bit for bit."""
    import surgeon
    from surgeon.api import inject, save_surgery, strip_to
    from surgeon.beats.fixtures import write_beats_checkpoint

    pt = write_beats_checkpoint(tmp_path / "BEATs.pt", predictor_class=3)
    model = surgeon.load(pt, allow_pickle=True)
    inject(model, "lora", targets=["q", "v"], rank=2)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".surgeon_" in n:
                p.add_(0.1)
    want = logits(model)
    save_surgery(model, tmp_path / "adapter")
    with pytest.raises(SurgeonError, match="--allow-pickle"):
        surgeon.load(tmp_path / "adapter")
    assert torch.equal(logits(surgeon.load(tmp_path / "adapter", allow_pickle=True)), want)
    save_surgery(model, tmp_path / "full", full=True)
    assert torch.equal(logits(surgeon.load(tmp_path / "full")), want)
    strip_to(tmp_path / "full", tmp_path / "stripped")
    got, original = surgeon.load(tmp_path / "stripped").state_dict(), surgeon.load(pt, allow_pickle=True).state_dict()
    assert list(got) == list(original) and all(torch.equal(got[k], original[k]) for k in got)


def test_the_token_layout_is_time_major():
    from surgeon.modules.layout import TokenLayout

    layout = TokenLayout(0, 8, None, "time")
    x = torch.arange(2 * 5 * 8, dtype=torch.float32).view(1, 40, 2).transpose(1, 2).reshape(2, 40, 1)
    _, grid = layout.split(x)  # [B, F, T, d]
    assert grid.shape == (2, 8, 5, 1)
    assert all(grid[0, f, t, 0] == x[0, t * 8 + f, 0] for f in range(8) for t in range(5))
    assert torch.equal(layout.merge(x[:, :0], grid), x)
    with pytest.raises(SurgeonError, match="time-major"):
        layout.split(torch.zeros(1, 12, 1))


@pytest.mark.parametrize("axis, reach", [("time", lambda df, dt: df == 0 and abs(dt) <= 2),
                                         ("frequency", lambda df, dt: dt == 0 and abs(df) <= 2)])
def test_loaa_convolves_along_beats_time_major_grid(base, axis, reach):
    """LoAA's 1x3 (3x1) convolutions follow time (frequency) on BEATs' time-major grid: a change of one
    token moves its neighbours along that axis and nothing outside two patches along it."""
    model = injected(base, "loaa", {"axis": axis, "placement": "pfeiffer", "location": "mhsa"})
    adapter = next(m for n, m in model.named_modules() if n.endswith("surgeon_loaa"))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(1, 6 * 8, 32, generator=g)  # 6 time steps x 8 frequency patches, time-major
    y = x.clone()
    t0, f0 = 3, 4
    y[0, t0 * 8 + f0] += 1.0
    with torch.no_grad():
        moved = (adapter(y) - adapter(x)).abs().sum(-1)[0] > 0
    for token in range(48):
        t, f = divmod(token, 8)
        if moved[token]:  # nothing moves off the axis or beyond the reach
            assert reach(f - f0, t - t0), (t, f)
    near = [(t0 + 1, f0), (t0 - 1, f0)] if axis == "time" else [(t0, f0 + 1), (t0, f0 - 1)]
    assert all(moved[t * 8 + f] for t, f in near)  # the axis's own neighbours do


def test_strip_of_an_adapter_on_a_pt_gives_the_pt_back(tmp_path, cli):
    import surgeon
    from surgeon.api import inject, save_surgery
    from surgeon.beats.fixtures import write_beats_checkpoint

    pt = write_beats_checkpoint(tmp_path / "BEATs.pt")
    model = surgeon.load(pt, allow_pickle=True)
    inject(model, "bottleneck", placement="houlsby")
    save_surgery(model, tmp_path / "adapter")
    r = cli("strip", tmp_path / "adapter", "--out", tmp_path / "base.pt")
    assert r.code == 2 and "--allow-pickle" in r.err and not (tmp_path / "base.pt").exists()
    assert cli("strip", tmp_path / "adapter", "--out", tmp_path / "base.pt", "--allow-pickle").code == 0
    assert (tmp_path / "base.pt").read_bytes() == pt.read_bytes()  # the authors' file, as it was
