"""The defining formulas: adapter placements (insertion x position x residual), LoRA, prefix and prompt
tuning against direct transcriptions, and LoAA's grid requirement with re-patching."""
import copy

import pytest
import torch

from surgeon.errors import SurgeonError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ast(tiny_dir):
    from surgeon.hf import load_pretrained

    return load_pretrained(tiny_dir("ast"))


def randomise(module, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("insertion", ["parallel", "sequential"])
@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("location", ["mhsa", "ffn"])
def test_placement_formulas(ast, insertion, position, residual, location):
    """u = sub-layer input (before) or output y (after); sequential: u -> A(u) [+ u]; parallel:
    y -> y + A(u) [+ u]."""
    from surgeon.api import inject

    model = copy.deepcopy(ast)
    inject(model, "bottleneck", location=location, insertion=insertion, position=position, residual=residual)
    layer = model.audio_spectrogram_transformer.layers[0]
    sub = layer.attention if location == "mhsa" else layer.mlp
    adapter = sub.surgeon_bottleneck
    randomise(adapter)
    plain = copy.deepcopy(ast.audio_spectrogram_transformer.layers[0].attention if location == "mhsa"
                          else ast.audio_spectrogram_transformer.layers[0].mlp)

    def run(m, x):
        out = m(x)
        return out[0] if isinstance(out, tuple) else out

    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        got = run(sub, x)
        if insertion == "sequential" and position == "before":
            want = run(plain, adapter(x) + (x if residual else 0))
        else:
            y = run(plain, x)
            u = x if position == "before" else y
            a = adapter(u) + (u if residual else 0)
            want = a if insertion == "sequential" else y + a
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("location", ["mhsa", "ffn"])
def test_sequential_before_is_the_authors_formula(ast, location):
    """Paper 002's Seq-Before rows, as the authors' code computes them: with u the sub-layer's LayerNorm
    output, the layer's residual stream h becomes h + Sub(A(u)) + A(u), written out on a whole AST layer."""
    from surgeon.api import inject, surgery

    model = copy.deepcopy(ast)
    inject(model, "bottleneck", location=location, insertion="sequential", position="before")
    opts = surgery(model)["methods"][0]["options"]
    assert (opts["sequential_before"], opts["residual"]) == ("authors", False)
    layer = model.audio_spectrogram_transformer.layers[0]
    adapter = (layer.attention if location == "mhsa" else layer.mlp).surgeon_bottleneck
    randomise(adapter)
    plain = ast.audio_spectrogram_transformer.layers[0]
    h = torch.randn(2, 7, 32)
    with torch.no_grad():
        if location == "mhsa":
            u = plain.layernorm_before(h)
            mid = h + plain.attention(adapter(u))[0] + adapter(u)
            want = mid + plain.mlp(plain.layernorm_after(mid))
        else:
            mid = h + plain.attention(plain.layernorm_before(h))[0]
            u = plain.layernorm_after(mid)
            want = mid + plain.mlp(adapter(u)) + adapter(u)
        got = layer(h)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_authors_sequential_before_trains_from_its_zero_start(ast):
    """A(u) = 0 at first, so every sub-layer reads zeros; the skip path A(u) still carries gradients to
    the adapter (with the real model's nonzero special tokens; the tiny ones are zero)."""
    from surgeon.api import inject

    model = copy.deepcopy(ast)
    with torch.no_grad():
        model.audio_spectrogram_transformer.embeddings.cls_token.normal_()
        model.audio_spectrogram_transformer.embeddings.distillation_token.normal_()
    inject(model, "bottleneck", insertion="sequential", position="before")
    params = {n: p for n, p in model.named_parameters() if ".surgeon_" in n}
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-2, weight_decay=0.0)
    for _ in range(2):
        opt.zero_grad()
        model(input_values=torch.randn(2, 100, 128)).logits.pow(2).mean().backward()
        opt.step()
    assert all(not torch.equal(p, before[n]) for n, p in params.items())


@pytest.mark.parametrize("given, form, residual", [({}, "authors", False), ({"residual": True}, "residual", True),
                                                   ({"residual": False}, "replace", False),
                                                   ({"sequential_before": "residual"}, "residual", True)])
def test_sequential_before_forms_and_their_residual(ast, given, form, residual):
    """An explicit residual keeps the form it always named; the record holds both, consistently."""
    from surgeon.api import inject, surgery

    model = copy.deepcopy(ast)
    inject(model, "bottleneck", insertion="sequential", position="before", **given)
    opts = surgery(model)["methods"][0]["options"]
    assert (opts["sequential_before"], opts["residual"]) == (form, residual)


@pytest.mark.parametrize("opts, message", [
    ({"insertion": "sequential", "position": "before", "sequential_before": "authors", "residual": True},
     "drop option residual"),
    ({"sequential_before": "authors"}, "applies to --insertion sequential --position before"),
])
def test_sequential_before_refuses_contradictions(ast, opts, message):
    from surgeon.api import inject

    with pytest.raises(SurgeonError, match=message):
        inject(copy.deepcopy(ast), "bottleneck", **opts)


def test_residual_defaults_follow_insertion(ast):
    from surgeon.api import inject, surgery

    for insertion, residual, position in (("parallel", False, "before"), ("sequential", True, "after")):
        model = copy.deepcopy(ast)
        inject(model, "bottleneck", insertion=insertion)
        opts = surgery(model)["methods"][0]["options"]
        assert (opts["residual"], opts["position"]) == (residual, position)


def test_lora_formula_and_merge(ast):
    from surgeon.api import inject

    model = copy.deepcopy(ast)
    inject(model, "lora", rank=3, alpha=4.0, targets=["q", "o"])
    q = model.audio_spectrogram_transformer.layers[1].attention.q_proj
    lora = q.surgeon_lora
    randomise(lora)
    s = 4.0 / (32 / 3)
    assert lora.scaling == pytest.approx(s)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        want = x @ q.weight.T + q.bias + s * (x @ lora.lora_A.T) @ lora.lora_B.T
        merged = x @ (q.weight + s * lora.lora_B @ lora.lora_A).T + q.bias
        torch.testing.assert_close(q(x), want, atol=1e-6, rtol=0)
        torch.testing.assert_close(q(x), merged, atol=1e-5, rtol=0)
    assert not hasattr(model.audio_spectrogram_transformer.layers[1].attention.k_proj, "surgeon_lora")


def test_prefix_equals_attention_over_prefixed_keys(ast):
    from surgeon.api import inject

    model = copy.deepcopy(ast)
    inject(model, "prefix", num_tokens=6)
    attn = model.audio_spectrogram_transformer.layers[0].attention
    prefix = attn.surgeon_prefix
    x = torch.randn(2, 9, 32)
    heads, hd = 2, 16
    with torch.no_grad():
        def split(t):
            return t.view(t.shape[0], -1, heads, hd).transpose(1, 2)

        q = split(attn.q_proj(x))
        k = split(torch.cat([prefix.key.expand(2, -1, -1), attn.k_proj(x)], dim=1))
        v = split(torch.cat([prefix.value.expand(2, -1, -1), attn.v_proj(x)], dim=1))
        weights = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1)
        want = attn.o_proj((weights @ v).transpose(1, 2).reshape(2, 9, 32))
        got = attn(x)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert prefix.key.shape == (3, 32) and prefix.value.shape == (3, 32)  # N/2 keys + N/2 values


@pytest.mark.parametrize("family", ["ast", "vit"])
@pytest.mark.parametrize("deep", [False, True])
def test_prompts_equal_running_layers_on_the_extended_sequence(tiny_dir, family, deep):
    from surgeon.api import inject
    from surgeon.hf import load_pretrained

    base = load_pretrained(tiny_dir(family))
    model = copy.deepcopy(base)
    p = 3
    inject(model, "prompt", num_tokens=p, deep=deep)
    encoder = model.get_submodule({"ast": "audio_spectrogram_transformer", "vit": "vit"}[family])
    plain = base.get_submodule({"ast": "audio_spectrogram_transformer", "vit": "vit"}[family])
    s = {"ast": 2, "vit": 1}[family]
    x = torch.randn(2, 100, 128) if family == "ast" else torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = plain.embeddings(x)
        for i, layer in enumerate(plain.layers):
            prompts = (encoder.layers[i] if deep else encoder.layers[0]).surgeon_prompt.prompts if (deep or i == 0) else None
            if prompts is not None:
                rest = h[:, s:] if i == 0 else h[:, s + p:]
                h = torch.cat([h[:, :s], prompts.expand(2, -1, -1), rest], dim=1)
            h = layer(h)
        want = plain.layernorm(torch.cat([h[:, :s], h[:, s + p:]], dim=1))
        got = encoder(x).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("deep", [False, True])
def test_prompts_without_dist_are_the_authors_layout(tiny_dir, deep):
    """--no-dist: the layers run on [CLS, P, patches] (DIST dropped, as the authors' code); after the
    last layer the prompts leave and CLS's output fills DIST's slot, so the pooled output is CLS's."""
    from surgeon.api import inject, surgery
    from surgeon.hf import load_pretrained

    base = load_pretrained(tiny_dir("ast"))
    model = copy.deepcopy(base)
    p = 3
    inject(model, "prompt", num_tokens=p, deep=deep, dist=False)
    assert surgery(model)["methods"][0]["options"]["dist"] is False
    encoder, plain = model.audio_spectrogram_transformer, base.audio_spectrogram_transformer
    x = torch.randn(2, 100, 128)
    with torch.no_grad():
        h = plain.embeddings(x)
        h = torch.cat([h[:, :1], encoder.layers[0].surgeon_prompt.prompts.expand(2, -1, -1), h[:, 2:]], dim=1)
        for i, layer in enumerate(plain.layers):
            if deep and i > 0:
                prompts = encoder.layers[i].surgeon_prompt.prompts.expand(2, -1, -1)
                h = torch.cat([h[:, :1], prompts, h[:, 1 + p:]], dim=1)
            h = layer(h)
        want = plain.layernorm(torch.cat([h[:, :1], h[:, :1], h[:, 1 + p:]], dim=1))
        out = encoder(x)
    torch.testing.assert_close(out.last_hidden_state, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooler_output, want[:, 0], atol=1e-5, rtol=0)


def test_prompt_masks_follow_the_tokens():
    """A layer's [.., Tq, Tk] mask over [CLS, DIST, patches] becomes the mask over [CLS, P, patches]:
    DIST's row and column leave, every query may attend to the prompts, and the prompts attend where
    CLS does (never to padding, which would otherwise reach every token through them)."""
    from surgeon.methods.prompt import PromptIn

    class Layer(torch.nn.Module):
        def forward(self, hidden_states, attention_mask=None):
            return hidden_states

    layer = Layer()
    layer.add_module("surgeon_prompt", torch.nn.Module())
    layer.surgeon_prompt.prompts = torch.nn.Parameter(torch.zeros(2, 4))
    base = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(0)) > 0.5  # CLS, DIST, 3 patches
    hook = PromptIn("prompt", "surgeon_prompt", start=1, count=2, first=True, dropped=1)
    (h, mask), _ = hook(layer, (torch.zeros(1, 5, 4), base), {})
    source = [0, None, None, 2, 3, 4]  # new position -> base position (None: a prompt)
    want = torch.empty(1, 1, 6, 6, dtype=torch.bool)
    for i, si in enumerate(source):
        for j, sj in enumerate(source):
            want[0, 0, i, j] = True if sj is None else base[0, 0, 0 if si is None else si, sj]
    assert h.shape == (1, 6, 4) and torch.equal(mask, want)


def test_dist_is_refused_where_there_is_none(tiny_dir):
    from surgeon.api import inject
    from surgeon.hf import load_pretrained

    with pytest.raises(SurgeonError, match="no distillation token"):
        inject(load_pretrained(tiny_dir("vit")), "prompt", num_tokens=2, dist=False)


@pytest.mark.parametrize("method, opts", [("prompt", {"num_tokens": 2}), ("prompt", {"num_tokens": 2, "deep": True}),
                                          ("prefix", {"num_tokens": 2})])
def test_padding_mask_is_opened_to_prompts_and_prefixes(tiny_dir, method, opts):
    """With a padding mask, padded samples give the same output as the unpadded sample alone."""
    from surgeon.api import inject
    from surgeon.hf import load_pretrained

    # (with the group-norm front end even the base model's padded outputs differ, by design)
    model = load_pretrained(tiny_dir("wav2vec2", feat_extract_norm="layer"))
    inject(model, method, **opts)
    wave = torch.randn(1, 800)
    padded = torch.cat([wave, torch.zeros(1, 400)], dim=1)
    mask = torch.cat([torch.ones(1, 800), torch.zeros(1, 400)], dim=1).long()
    with torch.no_grad():
        full = model.wav2vec2(padded, attention_mask=mask).last_hidden_state
        alone = model.wav2vec2(wave).last_hidden_state
    n = alone.shape[1]
    torch.testing.assert_close(full[:, :n], alone, atol=1e-6, rtol=0)  # padding never reaches a real token


# -- LoAA and the patch grid ----------------------------------------------------------------------------
def test_loaa_refuses_overlapping_patches(ast):
    from surgeon.api import inject

    model = copy.deepcopy(ast)
    with pytest.raises(SurgeonError, match="overlap.*--repatch"):
        inject(model, "loaa")
    assert "_surgeon" not in model.__dict__ and not any("surgeon_" in n for n, _ in model.named_parameters())


def test_loaa_repatch_is_identity_over_the_repatched_model_and_strips(ast, tmp_path):
    from surgeon.api import inject, load, save_surgery, strip
    from surgeon.methods.repatch import repatch
    from surgeon.methods.target import Target

    x = torch.randn(2, 100, 128)
    model = copy.deepcopy(ast)
    inject(model, "loaa", repatch=True)
    assert (model.config.frequency_stride, model.config.time_stride) == (16, 16)
    reference = copy.deepcopy(ast)
    repatch(Target(reference))
    table = reference.audio_spectrogram_transformer.embeddings.position_embeddings
    assert table.shape[1] == 2 + 8 * 6  # (128-16)//16+1 x (100-16)//16+1
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x).logits, atol=1e-6, rtol=0)
    # the layout the adapters convolve over is the new grid
    adapter = model.audio_spectrogram_transformer.layers[0].attention.surgeon_loaa
    assert (adapter.layout.num_special, adapter.layout.freq, adapter.layout.time) == (2, 8, 6)
    randomise(adapter)
    save_surgery(model, tmp_path / "loaa")
    loaded = load(tmp_path / "loaa")
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    strip(model)
    a, b = model.state_dict(), ast.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (model.config.frequency_stride, model.config.time_stride) == (10, 10)


def test_repatched_position_table_interpolates_the_pretrained_one(ast):
    """Special tokens keep their rows; a grid that is constant along frequency and time stays so."""
    from surgeon.methods.repatch import repatch
    from surgeon.methods.target import Target

    model = copy.deepcopy(ast)
    table = model.audio_spectrogram_transformer.embeddings.position_embeddings
    with torch.no_grad():
        table[:, :2] = torch.randn(1, 2, 32)
        table[:, 2:] = torch.randn(1, 1, 32)  # the same row for every patch
    old = table.detach().clone()
    repatch(Target(model))
    new = model.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    assert new.shape == (1, 2 + 8 * 6, 32)
    assert torch.equal(new[:, :2], old[:, :2])
    torch.testing.assert_close(new[:, 2:], old[:, 2:3].expand(1, 48, 32), atol=1e-6, rtol=0)


@pytest.mark.parametrize("opts, want", [
    ({}, {"attention": (1, 3), "mlp": (3, 1)}),                                 # the paper's best: Attn(T) + FFN(F)
    ({"placement": "pfeiffer"}, {"attention": (1, 3)}),
    ({"placement": "pfeiffer", "location": "ffn"}, {"mlp": (3, 1)}),
    ({"placement": "pfeiffer", "axis": "grid"}, {"attention": (3, 3)}),          # Table 1's (3,3)
    ({"axis": "grid,time", "kernel": 5}, {"attention": (5, 5), "mlp": (1, 5)}),
])
def test_loaa_defaults_are_the_papers_best(tiny_dir, opts, want):
    """Default placement Houlsby with time on MHSA and frequency on FFN; no biases, no LayerNorm trained."""
    from surgeon.api import inject, surgery
    from surgeon.hf import load_pretrained

    model = load_pretrained(tiny_dir("ast", frequency_stride=16, time_stride=16))
    inject(model, "loaa", **opts)
    recorded = surgery(model)["methods"][0]
    assert (recorded["options"]["bias"], recorded["options"]["train_norm"]) == (False, False)
    assert recorded["petl_parameters"] == recorded["num_parameters"]  # nothing of the backbone trains
    layer = model.audio_spectrogram_transformer.layers[0]
    found = {name: tuple(getattr(layer, name).surgeon_loaa.down.weight.shape[2:])
             for name in ("attention", "mlp") if hasattr(getattr(layer, name), "surgeon_loaa")}
    assert found == want


def test_grid_methods_refuse_speech_models(tiny_dir):
    from surgeon.api import inject
    from surgeon.hf import load_pretrained

    model = load_pretrained(tiny_dir("hubert"))
    for method, opts in (("loaa", {}), ("convpass", {"conv": "2d"})):
        with pytest.raises(SurgeonError, match="no 2-D patch grid"):
            inject(model, method, **opts)


def test_new_head_and_resized_positions_survive_save_and_load(ast, tmp_path):
    """What a recipe does before injecting (a head for its classes, a position table for its length)
    is recorded with the surgery, so loading rebuilds the same model."""
    from surgeon.api import inject, load, save_surgery
    from surgeon.positions import resize_position_embeddings

    model = copy.deepcopy(ast)
    resize_position_embeddings(model, 160)
    model.classifier.dense = torch.nn.Linear(32, 3)
    model.config.num_labels = 3
    inject(model, "lora")
    randomise(model.classifier.dense)
    save_surgery(model, tmp_path / "a")
    loaded = load(tmp_path / "a")
    x = torch.randn(2, 160, 128)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


@pytest.mark.parametrize("method, opts, message", [
    ("lora", {"rank": "8"}, "must be an integer"),
    ("bottleneck", {"residual": "False"}, "must be true or false"),
    ("lora", {"targets": ["q", "x"]}, "'x' is not one of q, k, v, o"),
    ("lora", {"rnak": 2}, "did you mean 'rank'"),
    ("soft-moa", {"expert": "conformer"}, "must be one of bottleneck, convpass"),
    ("prompt", {"num_tokens": 0}, "at least 1"),
])
def test_python_options_are_checked(ast, method, opts, message):
    from surgeon.api import inject

    model = copy.deepcopy(ast)
    with pytest.raises(SurgeonError, match=message):
        inject(model, method, **opts)
    assert "_surgeon" not in model.__dict__ and not any("surgeon_" in n for n, _ in model.named_parameters())


def test_bert_ffn_is_refused_for_adapters():
    from surgeon.api import inject
    from surgeon.tiny import build_tiny

    with pytest.raises(SurgeonError, match="whole sub-layer"):
        inject(build_tiny("bert"), "bottleneck", location="ffn")
