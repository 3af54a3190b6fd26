"""The method x placement grid on the newer backbones (DeiT, BEiT, WavLM, data2vec-audio, Whisper's
encoder): identity at initialisation, inject -> strip bit for bit, inject -> save -> load exact, only the
method's parameters train and one optimiser step moves them; one representative placement per method
where the code path is the one test_inject_methods covers, plus every path a backbone adds (Whisper's
FFN without a module of its own, WavLM's fused attention, BEiT's bias-free keys, DeiT's two heads).
Methods that do not fit a backbone are refused with one line (prompts on BEiT's relative positions,
prefix on WavLM's fused attention, LoAA without a patch grid)."""
import copy

import pytest
import torch
from torch import nn

from surgeon.errors import SurgeonError

# family -> the task model the grid runs (a classification head, so logits come out of the encoder)
MODELS = {
    "deit": "DeiTForImageClassificationWithTeacher",
    "beit": "BeitForImageClassification",
    "wavlm": "WavLMForSequenceClassification",
    "data2vec-audio": "Data2VecAudioForSequenceClassification",
    "whisper": "WhisperForAudioClassification",
}
GRID = ("deit", "beit")  # a patch grid: LoAA and the 2-D convpass apply
ADAPTERS = ("bottleneck", "convpass", "conformer", "loaa", "dense-moa", "soft-moa")
IDENTITY = [
    ("bottleneck", {}),
    ("bottleneck", {"placement": "houlsby", "insertion": "sequential"}),
    # the identity form of sequential-before (the authors' default form is not one: test_inject_semantics)
    ("bottleneck", {"location": "ffn", "insertion": "sequential", "position": "before", "sequential_before": "residual"}),
    ("bottleneck", {"location": "ffn"}),
    ("convpass", {"placement": "houlsby"}),
    ("conformer", {"location": "ffn", "insertion": "sequential"}),
    ("dense-moa", {}),
    ("soft-moa", {"placement": "houlsby"}),
    ("lora", {"targets": ["q", "k", "v", "o"], "rank": 2}),
    ("bitfit", {}),
    ("full", {}),
    ("loaa", {}),
    ("convpass", {"conv": "2d"}),
]
NON_IDENTITY = [("prefix", {"num_tokens": 4}), ("prompt", {"num_tokens": 3}), ("prompt", {"deep": True, "num_tokens": 2})]
# (family, method) pairs a backbone refuses, and why
REFUSED = {
    ("beit", "prompt"): "relative position bias",
    ("wavlm", "prefix"): "no attention-implementation switch",
}


def needs_grid(method, opts):
    return method == "loaa" or opts.get("conv") == "2d"


def cases(selection):
    out = []
    for family in MODELS:
        for method, opts in selection:
            if (needs_grid(method, opts) and family not in GRID) or (family, method) in REFUSED:
                continue
            label = "-".join(f"{k}={v}" for k, v in opts.items()) or "default"
            out.append(pytest.param(family, method, opts, id=f"{family}-{method}-{label}"))
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bases(tiny_dir):
    from surgeon.hf import load_pretrained

    cache = {}

    def get(family):
        if family not in cache:
            model = load_pretrained(tiny_dir(family, model_class=MODELS[family]))
            model.config.layerdrop = 0.0  # speech models skip layers at random in training otherwise
            cache[family] = model
        return cache[family]

    return get


def inputs(family, batch=2):
    g = torch.Generator().manual_seed(1)
    if family in GRID:
        return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=g)}
    if family == "whisper":
        return {"input_features": torch.randn(batch, 80, 100, generator=g)}
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


def assert_same_state(model, base):
    a, b = model.state_dict(), base.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert "_surgeon" not in model.__dict__
    assert not [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
                if type(h).__module__.startswith("surgeon")]
    assert not [k for m in model.modules() for k in m.__dict__ if k.startswith("_surgeon")]


def expected_backbone(model, method, opts):
    """Backbone parameters the papers' convention unfreezes."""
    from surgeon.methods.target import Target

    t = Target(model)
    if method in ADAPTERS:
        if not opts.get("train_norm", method != "loaa"):  # LoAA trains no LayerNorm by default (paper 004)
            return set()
        placement = opts.get("placement", "houlsby" if method == "loaa" else "pfeiffer")
        locs = ("mhsa", "ffn") if placement == "houlsby" else (opts.get("location", "mhsa"),)
        roles = [{"mhsa": "attn_norm", "ffn": "ffn_norm"}[loc] for loc in locs]
        return {f"{t.path(i, r)}.{leaf}" for i in range(t.num_layers) for r in roles for leaf in ("weight", "bias")}
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


@pytest.mark.parametrize("family, method, opts", cases(IDENTITY))
def test_identity_at_init_and_strip(bases, family, method, opts):
    from surgeon.api import strip

    base, model = injected(bases, family, method, opts)
    torch.testing.assert_close(logits(model, family), logits(base, family), atol=1e-6, rtol=0)
    strip(model)
    assert_same_state(model, base)


@pytest.mark.parametrize("family, method, opts", cases(NON_IDENTITY))
def test_strip_after_prompt_and_prefix(bases, family, method, opts):
    from surgeon.api import strip

    base, model = injected(bases, family, method, opts)
    assert logits(model, family).shape == logits(base, family).shape
    strip(model)
    assert_same_state(model, base)


@pytest.mark.parametrize("family, method, opts", cases(IDENTITY + NON_IDENTITY))
def test_only_the_method_trains_and_one_step_moves_it(bases, family, method, opts):
    from surgeon.api import parameter_groups
    from surgeon.methods.target import Target

    _, model = injected(bases, family, method, opts)
    t = Target(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    method_params = {n for n in trainable if ".surgeon_" in n}
    if method not in ("bitfit", "full"):
        assert method_params, "the method added no trainable parameter"
    head = {n for n, _ in model.named_parameters() if t.is_head(n)}
    assert head and trainable == method_params | expected_backbone(model, method, opts) | head
    assert not any("feature_extractor" in n for n in trainable)
    ids = {k: {id(p) for p in v} for k, v in parameter_groups(model).items()}
    named = dict(model.named_parameters())
    assert ids["method"] == {id(named[n]) for n in method_params}
    assert ids["head"] == {id(named[n]) for n in head}

    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(2):  # the first step moves the zero-initialised side, the second everything upstream
        opt.zero_grad()
        model(**inputs(family)).logits.pow(2).mean().backward()
        opt.step()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), f"frozen {n} changed"
        elif ".surgeon_" in n and not n.endswith("depthwise.bias"):  # (feeds a BatchNorm: gradient 0)
            assert not torch.equal(p, before[n]), f"method parameter {n} did not move"


def perturb(model):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


SAVED = [("bottleneck", {"placement": "houlsby"}), ("lora", {"targets": ["q", "k", "v", "o"], "rank": 2}),
         ("prefix", {"num_tokens": 4}), ("prompt", {"deep": True, "num_tokens": 2}), ("loaa", {})]


@pytest.mark.parametrize("family, method, opts", cases(SAVED))
def test_save_then_load_reproduces_outputs(bases, family, method, opts, tmp_path):
    from surgeon.api import load, save_surgery, strip, strip_to
    from surgeon.hf import load_pretrained

    _, model = injected(bases, family, method, opts)
    perturb(model)
    model.eval()
    save_surgery(model, tmp_path / "adapter")
    assert torch.equal(logits(load(tmp_path / "adapter"), family), logits(model, family))
    save_surgery(model, tmp_path / "full", full=True)
    assert torch.equal(logits(load(tmp_path / "full"), family), logits(model, family))
    strip_to(tmp_path / "full", tmp_path / "stripped")
    got, want = load_pretrained(tmp_path / "stripped").state_dict(), strip(model).state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


@pytest.mark.parametrize("family, method", sorted(REFUSED))
def test_what_a_backbone_cannot_take_is_refused(bases, family, method):
    from surgeon.api import inject

    model = copy.deepcopy(bases(family))
    with pytest.raises(SurgeonError, match=REFUSED[(family, method)]):
        inject(model, method, num_tokens=4)
    assert "_surgeon" not in model.__dict__


@pytest.mark.parametrize("family", [f for f in MODELS if f not in GRID])
def test_loaa_needs_a_patch_grid(bases, family):
    from surgeon.api import inject

    with pytest.raises(SurgeonError, match="no 2-D patch grid"):
        inject(copy.deepcopy(bases(family)), "loaa")


# -- what the new backbones add -----------------------------------------------------------------


def randomise(module, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("insertion, position", [("parallel", "before"), ("parallel", "after"),
                                                 ("sequential", "before"), ("sequential", "after")])
def test_whisper_ffn_span_is_the_whole_feed_forward(bases, insertion, position):
    """Whisper's FFN is fc1 -> act -> fc2 straight on the layer: with u its input (before) or output y
    (after), sequential gives u -> A(u) [+ u] and parallel y -> y + A(u), as for a module."""
    from surgeon.api import inject

    base = bases("whisper")
    model = copy.deepcopy(base)
    inject(model, "bottleneck", location="ffn", insertion=insertion, position=position)
    layer, plain = model.encoder.layers[0], base.encoder.layers[0]
    adapter = layer.fc2.surgeon_bottleneck
    randomise(adapter)
    residual = insertion == "sequential"

    def ffn(x):
        return plain.fc2(plain.activation_fn(plain.fc1(x)))

    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        got = layer.fc2(layer.activation_fn(layer.fc1(x)))
        if insertion == "sequential" and position == "before":  # the authors' form: Sub(A(u)) + A(u)
            want = ffn(adapter(x)) + adapter(x)
        else:
            y = ffn(x)
            u = x if position == "before" else y
            a = adapter(u) + (u if residual else 0)
            want = a if insertion == "sequential" else y + a
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # WavLM's own attention
def test_wavlm_lora_reaches_its_fused_attention(bases):
    """WavLM's attention reads the projection weights directly; with LoRA its output is the attention of
    W + s B A for every adapted projection."""
    from surgeon.api import inject

    base = bases("wavlm")
    model = copy.deepcopy(base)
    inject(model, "lora", targets=["q", "k", "v", "o"], rank=2)
    attn = model.wavlm.encoder.layers[0].attention
    merged = copy.deepcopy(base.wavlm.encoder.layers[0].attention)
    with torch.no_grad():
        for role in ("q_proj", "k_proj", "v_proj", "out_proj"):
            lora = getattr(attn, role).surgeon_lora
            randomise(lora, seed=len(role))
            getattr(merged, role).weight += lora.scaling * lora.lora_B @ lora.lora_A
        x = torch.randn(2, 9, 32)
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[1, 6:] = 0  # a padded item
        for m in (None, mask):
            got, weights, bias = attn(x, attention_mask=m)
            want, want_weights, _ = merged(x, attention_mask=m, position_bias=bias)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            torch.testing.assert_close(weights, want_weights, atol=1e-6, rtol=0)


def test_deit_distilled_heads_both_fit_the_classes(bases):
    from surgeon.train.tasks import get_task

    model = copy.deepcopy(bases("deit"))
    get_task("classification").prepare(model, list("abcdefg"))
    assert model.cls_classifier.out_features == model.distillation_classifier.out_features == 7
    assert logits(model, "deit").shape == (2, 7)
