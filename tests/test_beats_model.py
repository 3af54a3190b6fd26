"""The native BEATs model against a direct transcription of the equations, written here independently of
surgeon's code: one item at a time, one head at a time, with plain tensor algebra (explicit LayerNorm,
softmax, erf GELU, weight norm, grouped convolution, T5 buckets in Python floats, the gate).

We cannot run the authors' code here; these equations are the facts of reference/beats.md and paper 003.
"""
from __future__ import annotations

import functools
import math

import pytest
import torch

from surgeon.beats.checkpoint import build, parse
from surgeon.beats.fixtures import beats_cfg, beats_state_dict
from surgeon.errors import SurgeonError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOL = 1e-4


# -- the transcription ------------------------------------------------------------------------------
def layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w + b


def linear(x, s, name):
    return x @ s[name + ".weight"].T + s[name + ".bias"]


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


@functools.cache
def buckets(t: int, num_buckets: int, max_distance: int):
    return torch.tensor([[bucket(j - i, num_buckets, max_distance) for j in range(t)] for i in range(t)])


def bucket(rel: int, num_buckets: int, max_distance: int) -> int:
    half = num_buckets // 2
    base = half if rel > 0 else 0
    n, exact = abs(rel), half // 2
    if n < exact:
        return base + n
    return base + min(exact + int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact)), half - 1)


def fbank(w):
    import torchaudio.compliance.kaldi as kaldi

    f = kaldi.fbank(w[None] * 32768.0, num_mel_bins=128, sample_frequency=16000.0, frame_length=25.0,
                    frame_shift=10.0)
    return (f - 15.41663) / (2 * 6.55582)


def patches(fb, s, cfg):
    """Token t * F + f is the conv of the patch at time block t, frequency block f."""
    p = cfg["input_patch_size"]
    w = s["patch_embedding.weight"].reshape(cfg["embed_dim"], p * p)
    out = []
    for t in range(fb.shape[0] // p):
        for f in range(128 // p):
            y = w @ fb[t * p:(t + 1) * p, f * p:(f + 1) * p].reshape(-1)
            out.append(y + s["patch_embedding.bias"] if cfg.get("conv_bias") else y)
    return torch.stack(out)


def pos_conv(x, s, cfg):
    """GELU(weight-normed grouped conv, padding k // 2, last step dropped for an even k), on [T, d]."""
    k, groups, d = cfg["conv_pos"], cfg["conv_pos_groups"], cfg["encoder_embed_dim"]
    v, g = s["encoder.pos_conv.0.weight_v"], s["encoder.pos_conv.0.weight_g"]
    w = g * v / torch.sqrt((v ** 2).sum(dim=(0, 1), keepdim=True))  # [d, d / groups, k]
    t, c = x.shape[0], d // groups
    padded = torch.cat([torch.zeros(k // 2, d), x, torch.zeros(k // 2, d)])
    windows = torch.stack([padded[pos:pos + k] for pos in range(t)])  # [t, k, d]: output t sees inputs t-k/2..
    out = torch.cat([torch.einsum("tki,oik->to", windows[:, :, g * c:(g + 1) * c], w[g * c:(g + 1) * c])
                     for g in range(groups)], dim=1)
    return gelu(out + s["encoder.pos_conv.0.bias"])


def attention(x, s, p, cfg, pad):
    t, d = x.shape
    heads = cfg["encoder_attention_heads"]
    hd = d // heads
    q, k, v = (linear(x, s, p + f"self_attn.{n}_proj") for n in "qkv")
    table = s[p + "self_attn.relative_attention_bias.weight"] if cfg["relative_position_embedding"] else None
    outs = []
    for h in range(heads):
        qh, kh, vh = (m[:, h * hd:(h + 1) * hd] for m in (q, k, v))
        scores = qh @ kh.T / math.sqrt(hd)
        if table is not None:
            bias = table[buckets(t, cfg["num_buckets"], cfg["max_distance"]), h]  # [query, key]
            if cfg["gru_rel_pos"]:
                g = qh @ s[p + "self_attn.grep_linear.weight"].T + s[p + "self_attn.grep_linear.bias"]
                ga, gb = torch.sigmoid(g[:, :4].sum(1)), torch.sigmoid(g[:, 4:].sum(1))
                gate = ga * (gb * s[p + "self_attn.grep_a"][0, h, 0, 0] - 1) + 2
                bias = gate[:, None] * bias
            scores = scores + bias
        scores[:, pad] = float("-inf")
        weights = torch.exp(scores - scores.max(-1, keepdim=True).values)
        outs.append((weights / weights.sum(-1, keepdim=True)) @ vh)
    return linear(torch.cat(outs, dim=1), s, p + "self_attn.out_proj")


def ffn(x, s, p, cfg):
    act = {"gelu": gelu, "relu": torch.relu}[cfg["activation_fn"]]
    return linear(act(linear(x, s, p + "fc1")), s, p + "fc2")


def reference(s, cfg, wav, token_pad=None):
    """Features [T, d], logits or None, and the encoder's input, of one waveform; token_pad [T] bool."""
    n = cfg["encoder_layers"]
    alpha = (2 * n) ** 0.25 if cfg["deep_norm"] else 1.0
    x = layer_norm(patches(fbank(wav), s, cfg), s["layer_norm.weight"], s["layer_norm.bias"])
    if cfg["embed_dim"] != cfg["encoder_embed_dim"]:
        x = linear(x, s, "post_extract_proj")
    pad = torch.zeros(x.shape[0], dtype=torch.bool) if token_pad is None else token_pad
    x = torch.where(pad[:, None], 0.0, x)
    x = x + pos_conv(x, s, cfg)
    enc_ln = (s["encoder.layer_norm.weight"], s["encoder.layer_norm.bias"])
    if not cfg["layer_norm_first"]:
        x = layer_norm(x, *enc_ln)
    first = x
    for i in range(n):
        p = f"encoder.layers.{i}."
        ln1 = (s[p + "self_attn_layer_norm.weight"], s[p + "self_attn_layer_norm.bias"])
        ln2 = (s[p + "final_layer_norm.weight"], s[p + "final_layer_norm.bias"])
        if cfg["layer_norm_first"]:
            x = x + attention(layer_norm(x, *ln1), s, p, cfg, pad)
            x = x + ffn(layer_norm(x, *ln2), s, p, cfg)
        else:
            x = layer_norm(alpha * x + attention(x, s, p, cfg, pad), *ln1)
            x = layer_norm(alpha * x + ffn(x, s, p, cfg), *ln2)
    if cfg["layer_norm_first"]:
        x = layer_norm(x, *enc_ln)
    logits = None
    if cfg["finetuned_model"]:
        logits = linear(x[~pad], s, "predictor").mean(0)
    return x, logits, first


# -- the cases ------------------------------------------------------------------------------------
CASES = {
    "iter3": {},
    "fine-tuned": dict(predictor_class=5),
    "pre-LN, no position bias, relu": dict(layer_norm_first=True, deep_norm=False, relative_position_embedding=False,
                                          gru_rel_pos=False, activation_fn="relu"),
    "ungated bias, conv bias, no projection, odd kernel": dict(gru_rel_pos=False, conv_bias=True, embed_dim=32,
                                                               conv_pos=7, conv_pos_groups=2),
}


def make(case: str, seed: int = 0):
    over = dict(CASES[case])
    cfg = beats_cfg("small", over.pop("predictor_class", None), **over)
    state = beats_state_dict(cfg, seed=seed)
    return cfg, state, build(parse({"cfg": cfg, "model": state}, "fixture.pt"))


def waves(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch = torch.zeros(len(lengths), max(lengths))
    mask = torch.ones(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        batch[i, :n] = 0.1 * torch.randn(n, generator=gen)
        mask[i, :n] = False
    return batch, mask


@pytest.mark.parametrize("case", CASES)
def test_features_equal_the_transcription(case):
    cfg, state, model = make(case)
    wav, _ = waves([16_000, 16_000])
    with torch.no_grad():
        out = model(input_values=wav, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 48, 32)
    for i in range(2):
        x, logits, first = reference(state, cfg, wav[i])
        assert (out.last_hidden_state[i] - x).abs().max() < TOL
        assert (out.hidden_states[0][i] - first).abs().max() < TOL
        if logits is not None:
            assert (out.logits[i] - logits).abs().max() < TOL
    assert out.padding_mask is None and (out.logits is None) == (not cfg["finetuned_model"])


@pytest.mark.parametrize("case", ["iter3", "fine-tuned"])
def test_padded_features_equal_the_transcription_under_the_authors_rule(case):
    """The authors' mask reduction: the transcription is given the token mask their rule gives."""
    cfg, state, model = make(case)
    wav, mask = waves([16_000, 9_000])
    with torch.no_grad():
        out = model(input_values=wav, padding_mask=mask)
    pad = out.padding_mask
    assert pad[0].sum() == 0 and pad[1].sum() == 48 - 28  # 9000 of 16000 samples: 28 tokens kept
    for i in range(2):
        x, logits, _ = reference(state, cfg, wav[i], pad[i])
        assert (out.last_hidden_state[i][~pad[i]] - x[~pad[i]]).abs().max() < TOL
        if logits is not None:
            assert (out.logits[i] - logits).abs().max() < TOL


@pytest.mark.parametrize("case", ["iter3", "fine-tuned"])
def test_a_padded_batch_gives_each_item_alone(case):
    """With mask_mode="strict" the kept tokens of a padded item are the tokens of the item run alone, and
    they (and the fine-tuned logits) equal the item's own result."""
    _, _, model = make(case)
    lengths = [16_000, 9_000, 2_800]
    wav, mask = waves(lengths, seed=3)
    with torch.no_grad():
        out = model(input_values=wav, padding_mask=mask, mask_mode="strict")
        model.mask_mode = "strict"  # the default of calls that do not say (a training loop's)
        assert torch.equal(model(input_values=wav, attention_mask=(~mask).long()).padding_mask, out.padding_mask)
        model.mask_mode = "authors"
        for i, n in enumerate(lengths):
            alone = model(input_values=wav[i:i + 1, :n])
            kept = ~out.padding_mask[i]
            assert int(kept.sum()) == alone.last_hidden_state.shape[1]
            assert (out.last_hidden_state[i, kept] - alone.last_hidden_state[0]).abs().max() < TOL
            if alone.logits is not None:
                assert (out.logits[i] - alone.logits[0]).abs().max() < TOL


def test_fine_tuned_probabilities():
    cfg, state, model = make("fine-tuned")
    wav, mask = waves([16_000, 12_000])
    with torch.no_grad():
        probs, pad = model.extract_features(wav, padding_mask=mask)
    for i in range(2):
        _, logits, _ = reference(state, cfg, wav[i], pad[i])
        assert (probs[i] - torch.sigmoid(logits)).abs().max() < TOL
    assert probs.shape == (2, 5) and ((probs > 0) & (probs < 1)).all()


def test_hidden_states_are_the_encoder_input_then_every_layer():
    _, _, model = make("iter3")
    wav, _ = waves([16_000])
    with torch.no_grad():
        out = model(input_values=wav, output_hidden_states=True)
        assert len(out.hidden_states) == 3 and torch.equal(out.hidden_states[-1], out.last_hidden_state)
        assert model(input_values=wav).hidden_states is None


def test_the_gate_sees_what_q_proj_gives():
    """The gate is computed from q_proj's output as the module returns it: a forward hook on q_proj (as
    LoRA adds) reaches scores and gate alike, as adding the same to q_proj's bias does in the transcription."""
    cfg, state, model = make("iter3")
    wav, _ = waves([16_000])
    delta = 0.5 * torch.randn(32, generator=torch.Generator().manual_seed(4))
    q_proj = model.encoder.layers[1].self_attn.q_proj
    handle = q_proj.register_forward_hook(lambda module, args, out: out + delta)
    with torch.no_grad():
        got = model(input_values=wav).last_hidden_state[0]
    handle.remove()
    changed = {**state, "encoder.layers.1.self_attn.q_proj.bias": state["encoder.layers.1.self_attn.q_proj.bias"] + delta}
    assert (got - reference(changed, cfg, wav[0])[0]).abs().max() < TOL
    assert (got - reference(state, cfg, wav[0])[0]).abs().max() > 1e-2


def test_layer_wise_gradient_decay_scales_gradients_per_layer():
    """GradMultiply before every layer: layer i's parameters get ratio^(N - 1 - i) of their gradient."""
    cfg = beats_cfg("small", encoder_layers=3, layer_wise_gradient_decay_ratio=1.0)
    state = beats_state_dict(cfg)
    wav, _ = waves([16_000])
    grads = {}
    for ratio in (1.0, 0.6):
        model = build(parse({"cfg": {**cfg, "layer_wise_gradient_decay_ratio": ratio}, "model": state}, "f.pt"))
        model.zero_grad()
        model(input_values=wav).last_hidden_state.sum().backward()
        grads[ratio] = [model.encoder.layers[i].fc1.weight.grad.clone() for i in range(3)]
    for i in range(3):
        assert torch.allclose(grads[0.6][i], grads[1.0][i] * 0.6 ** (2 - i), rtol=1e-4, atol=1e-7)


def test_training_mode_uses_dropout_and_eval_does_not():
    cfg = beats_cfg("small", dropout=0.5)
    model = build(parse({"cfg": cfg, "model": beats_state_dict(cfg)}, "f.pt"))
    wav, _ = waves([16_000])
    with torch.no_grad():
        assert torch.equal(model(input_values=wav).last_hidden_state, model(input_values=wav).last_hidden_state)
        model.train()
        assert not torch.equal(model(input_values=wav).last_hidden_state, model(input_values=wav).last_hidden_state)


@pytest.mark.parametrize("call, words", [
    (lambda m: m(input_values=torch.zeros(1, 2_799)), "needs at least 2800"),
    (lambda m: m(input_values=torch.zeros(1, 1, 16_000)), "got a 3-D"),
    (lambda m: m(input_values=torch.zeros(1, 16_000, dtype=torch.long)), "float waveform"),
    (lambda m: m(input_values=torch.zeros(2, 16_000), padding_mask=torch.zeros(2, 15_000, dtype=torch.bool)),
     "must match"),
    (lambda m: m(input_values=torch.zeros(1, 16_000), padding_mask=torch.zeros(1, 16_000, dtype=torch.bool),
                 attention_mask=torch.ones(1, 16_000)), "not both"),
    (lambda m: m(input_values=torch.zeros(1, 16_000), padding_mask=torch.ones(1, 16_000, dtype=torch.bool)),
     "item 0 keeps no token"),
])
def test_bad_inputs_give_one_line_errors(call, words):
    _, _, model = make("iter3")
    with pytest.raises(SurgeonError) as e:
        call(model)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_single_waveform_is_a_batch_of_one():
    _, _, model = make("iter3")
    wav, _ = waves([16_000])
    with torch.no_grad():
        assert torch.equal(model(input_values=wav[0]).last_hidden_state, model(input_values=wav).last_hidden_state)
