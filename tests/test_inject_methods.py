"""Every method x placement x backbone on tiny models: identity at initialisation, exact save/load round
trips, bit-exact strip, the right parameters trainable, and one optimiser step that moves the method
and nothing frozen."""
import copy

import pytest
import torch
from torch import nn

BACKBONES = ("ast", "vit", "hubert", "wav2vec2")
GRID = ("ast", "vit")
ADAPTERS = ("bottleneck", "convpass", "conformer", "loaa", "dense-moa", "soft-moa")

PLACEMENTS = [
    {},                                                              # Pfeiffer, MHSA, parallel, before
    {"location": "ffn"},
    {"location": "mhsa", "insertion": "sequential"},                 # sequential after, residual
    {"location": "ffn", "insertion": "sequential"},
    {"insertion": "sequential", "position": "before", "sequential_before": "residual"},  # h + Sub(A(u) + u)
    {"location": "ffn", "position": "after"},                        # parallel after
    {"placement": "houlsby"},
    {"placement": "houlsby", "insertion": "sequential"},
]
IDENTITY_CASES = (
    [("bottleneck", p) for p in PLACEMENTS]
    + [(m, p) for m in ("convpass", "conformer", "dense-moa", "soft-moa")
       for p in ({}, {"placement": "houlsby"}, {"location": "ffn", "insertion": "sequential"})]
    + [("dense-moa", {"expert": "convpass", "num_experts": 3}), ("soft-moa", {"expert": "convpass", "slots": 2})]
    + [("lora", {}), ("lora", {"targets": ["q", "k", "v", "o"], "rank": 2}), ("bitfit", {}), ("linear", {}),
       ("full", {})]
    + [("convpass", {"conv": "2d"}), ("loaa", {}), ("loaa", {"axis": "time,frequency", "placement": "houlsby"}),
       ("loaa", {"placement": "pfeiffer", "location": "ffn", "axis": "frequency"}),
       ("loaa", {"placement": "pfeiffer", "axis": "grid", "bias": True, "train_norm": True}),
       ("bottleneck", {"train_norm": False})]
)
AUTHORS_SEQ_BEFORE = ("bottleneck", {"insertion": "sequential", "position": "before"})  # h + Sub(A(u)) + A(u)
NON_IDENTITY = [("prefix", {"num_tokens": 4}), ("prompt", {"num_tokens": 3}),
                ("prompt", {"deep": True, "num_tokens": 2}), AUTHORS_SEQ_BEFORE]
ALL_CASES = IDENTITY_CASES + NON_IDENTITY
# The authors' sequential-before feeds a zero adapter's zeros to every attention at first; the tiny
# models' all-zero CLS/DIST tokens and biases then give exactly zero logits and no gradient at all, so
# its training step is tested on an AST with random special tokens (test_inject_semantics).
STEP_CASES = [c for c in ALL_CASES if c != AUTHORS_SEQ_BEFORE]


def needs_grid(method, opts):
    return method == "loaa" or opts.get("conv") == "2d"


def cases(selection):
    out = []
    for family in BACKBONES:
        for method, opts in selection:
            if needs_grid(method, opts) and family not in GRID:
                continue
            label = "-".join(f"{k}={v}" for k, v in opts.items()) or "default"
            out.append(pytest.param(family, method, opts, id=f"{family}-{method}-{label}"))
    return out


def tiny_overrides(family):
    # AST with non-overlapping patches, so LoAA applies without re-patching (re-patching: test_inject_grid)
    return {"frequency_stride": 16, "time_stride": 16} if family == "ast" else {}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bases(tiny_dir):
    from surgeon.hf import load_pretrained

    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = load_pretrained(tiny_dir(family, **tiny_overrides(family)))
        return cache[family]

    return get


def inputs(family, batch=2):
    g = torch.Generator().manual_seed(1)
    if family == "ast":
        return {"input_values": torch.randn(batch, 100, 128, generator=g)}
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=g)}
    return {"input_values": torch.randn(batch, 800, generator=g)}


def logits(model, family):
    with torch.no_grad():
        return model(**inputs(family)).logits


def injected(bases, family, method, opts):
    from surgeon.api import inject

    base = bases(family)
    model = copy.deepcopy(base)
    inject(model, method, **opts)
    return base, model


def expected_backbone(model, method, opts):
    """Backbone parameters the papers' convention unfreezes (independent of the implementation)."""
    from surgeon.methods.target import Target

    t = Target(model)
    if method in ADAPTERS and opts.get("train_norm", method != "loaa"):  # paper 004 trains no LayerNorm
        placement = opts.get("placement", "houlsby" if method == "loaa" else "pfeiffer")
        locs = ("mhsa", "ffn") if placement == "houlsby" else (opts.get("location", "mhsa"),)
        roles = [{"mhsa": "attn_norm", "ffn": "ffn_norm"}[loc] for loc in locs]
        return {f"{t.path(i, r)}.{leaf}" for i in range(t.num_layers) for r in roles for leaf in ("weight", "bias")}
    if method in ADAPTERS:
        return set()
    if method == "bitfit":
        names = set()
        for path, mod in model.named_modules():
            inside = path.startswith(t.prefix + t.family.memory.layers + ".") or path == t.final_norm_path()
            if inside and isinstance(mod, (nn.Linear, nn.LayerNorm)) and mod.bias is not None:
                names.add(f"{path}.bias")
        return names
    if method == "full":
        return {n for n, _ in model.named_parameters()
                if not t.is_head(n) and "feature_extractor" not in n and "surgeon_" not in n}
    return set()


@pytest.mark.parametrize("family, method, opts", cases(IDENTITY_CASES))
def test_identity_at_init_and_strip(bases, family, method, opts):
    from surgeon.api import strip

    base, model = injected(bases, family, method, opts)
    torch.testing.assert_close(logits(model, family), logits(base, family), atol=1e-6, rtol=0)
    strip(model)
    assert_same_state(model, base)


@pytest.mark.parametrize("family, method, opts", cases(NON_IDENTITY))
def test_strip_after_the_non_identity_methods(bases, family, method, opts):
    from surgeon.api import strip

    base, model = injected(bases, family, method, opts)
    out = logits(model, family)
    assert out.shape == logits(base, family).shape  # prompts leave the sequence before the heads
    strip(model)
    assert_same_state(model, base)
    torch.testing.assert_close(logits(model, family), logits(base, family), atol=0, rtol=0)


def assert_same_state(model, base):
    a, b = model.state_dict(), base.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert all(p.requires_grad for p in model.parameters())
    assert "_surgeon" not in model.__dict__
    assert not [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
                if type(h).__module__.startswith("surgeon")]


@pytest.mark.parametrize("family, method, opts", cases(ALL_CASES))
def test_only_the_right_parameters_train(bases, family, method, opts):
    from surgeon.api import parameter_groups
    from surgeon.methods.target import Target

    _, model = injected(bases, family, method, opts)
    t = Target(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    method_params = {n for n in trainable if ".surgeon_" in n}
    if method not in ("bitfit", "linear", "full"):
        assert method_params, "the method added no trainable parameter"
    head = {n for n, _ in model.named_parameters() if t.is_head(n)}
    assert trainable == method_params | expected_backbone(model, method, opts) | head
    assert not any("feature_extractor" in n for n in trainable)  # the CNN front end stays frozen
    groups = parameter_groups(model)
    ids = {k: {id(p) for p in v} for k, v in groups.items()}
    named = dict(model.named_parameters())
    assert ids["method"] == {id(named[n]) for n in method_params}
    assert ids["head"] == {id(named[n]) for n in head}
    assert ids["backbone"] == {id(named[n]) for n in expected_backbone(model, method, opts)}


@pytest.mark.parametrize("family, method, opts", cases(STEP_CASES))
def test_adamw_steps_move_the_method_and_nothing_frozen(bases, family, method, opts):
    _, model = injected(bases, family, method, opts)
    model.config.layerdrop = 0.0  # speech models skip layers at random in training otherwise
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(2):  # the first step moves the zero-initialised up side, the second everything upstream
        opt.zero_grad()
        model(**inputs(family)).logits.pow(2).mean().backward()
        opt.step()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), f"frozen {n} changed"
        elif ".surgeon_" in n and not n.endswith("depthwise.bias"):
            # (the conformer's depthwise bias feeds a BatchNorm in training mode: its gradient is exactly 0)
            assert not torch.equal(p, before[n]), f"method parameter {n} did not move"
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved


def perturb(model):
    """Give every trainable parameter (and the injected buffers) values that init would not produce."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        for n, b in model.named_buffers():
            if ".surgeon_" in n and b.is_floating_point():
                b.add_(0.1 * torch.rand(b.shape, generator=g))


@pytest.mark.parametrize("family, method, opts", cases(ALL_CASES))
def test_save_then_load_reproduces_outputs(bases, family, method, opts, tmp_path):
    from surgeon.api import load, save_surgery

    _, model = injected(bases, family, method, opts)
    perturb(model)
    save_surgery(model, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["README.md", "adapter.safetensors", "surgery.json"]
    loaded = load(tmp_path / "adapter")
    assert torch.equal(logits(loaded, family), logits(model, family))
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == \
        {n for n, p in model.named_parameters() if p.requires_grad}


FULL_CASES = [("bottleneck", {"placement": "houlsby"}), ("lora", {}), ("conformer", {}), ("soft-moa", {}),
              ("prefix", {"num_tokens": 4}), ("prompt", {"deep": True, "num_tokens": 2}), ("bitfit", {}), ("loaa", {})]


@pytest.mark.parametrize("family, method, opts", cases(FULL_CASES))
def test_full_save_then_load_and_strip(bases, family, method, opts, tmp_path):
    from surgeon.api import load, save_surgery, strip, strip_to
    from surgeon.hf import load_pretrained

    base, model = injected(bases, family, method, opts)
    perturb(model)
    save_surgery(model, tmp_path / "full", full=True)
    loaded = load(tmp_path / "full")
    assert torch.equal(logits(loaded, family), logits(model, family))
    strip_to(tmp_path / "full", tmp_path / "stripped")
    stripped = load_pretrained(tmp_path / "stripped")
    expected = strip(model).state_dict()
    got = stripped.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
