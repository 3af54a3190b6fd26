"""The per-tensor merge methods (issue 14 item 2/3): each against a direct, element-wise transcription
of its published definition (mergekit's), and the properties that define it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from surgeon.errors import SurgeonError
from surgeon.merging.methods import make_params, method, names
from surgeon.merging.tasks import TensorTask


def _tensors(n, shape=(6, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    inputs = tuple(base + 0.5 * torch.randn(shape, generator=g) for _ in range(n))
    return base, inputs


def _task(inputs, base=None, weights=None, densities=None, key="layer.0.q.weight"):
    n = len(inputs)
    return TensorTask(key, tuple(inputs), base, tuple(weights or (1.0,) * n), tuple(densities or (1.0,) * n))


def _combine(name, task, **params):
    return method(name).combine(task, make_params(name, params))


# --- direct transcriptions, element by element in float64 ------------------------------------------

def ref_linear(xs, ws, normalize=True):
    xs = [x.double().numpy() for x in xs]
    out = np.zeros_like(xs[0])
    for idx in np.ndindex(out.shape):
        s = sum(w * x[idx] for w, x in zip(ws, xs))
        out[idx] = s / sum(ws) if normalize else s
    return out


def ref_trim(d, density):
    """Top int(density * numel) by magnitude (at least one), the rest 0."""
    flat = d.reshape(-1)
    k = max(1, int(density * flat.size))
    order = sorted(range(flat.size), key=lambda j: -abs(flat[j]))
    out = np.zeros_like(flat)
    for j in order[:k]:
        out[j] = flat[j]
    return out.reshape(d.shape)


def ref_task_vectors(xs, base, ws, lam, normalize, vectors, consensus=None):
    """base + lam * merge of the (already sparsified) task vectors, element by element."""
    b = base.double().numpy()
    out = np.zeros_like(b)
    for idx in np.ndindex(b.shape):
        wd = [w * v[idx] for w, v in zip(ws, vectors)]
        if consensus is None:
            mixed, div = sum(wd), sum(ws)
            div = div if abs(div) >= 1e-8 else 1.0
        else:
            votes = sum(wd) if consensus == "sum" else sum(np.sign(x) for x in wd)
            elected = 1.0 if votes >= 0 else -1.0
            agree = [i for i, x in enumerate(wd) if np.sign(x) == elected]
            mixed = sum(wd[i] for i in agree)
            div = sum(ws[i] for i in agree) or 1.0
        out[idx] = b[idx] + lam * (mixed / div if normalize else mixed)
    return out


def ref_slerp(v0, v1, t):
    a, b = v0.double().numpy().reshape(-1), v1.double().numpy().reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    ua = a / na if na > 1e-8 else a
    ub = b / nb if nb > 1e-8 else b
    dot = float(np.sum(ua * ub))
    if abs(dot) > 0.9995:
        out = (1 - t) * a + t * b
    else:
        theta = math.acos(dot)
        out = math.sin((1 - t) * theta) / math.sin(theta) * a + math.sin(t * theta) / math.sin(theta) * b
    return out.reshape(v0.shape)


def close(actual, expected, atol=1e-5):
    assert actual.dtype == torch.float32
    np.testing.assert_allclose(actual.double().numpy(), expected, rtol=1e-5, atol=atol)


# --- the registry --------------------------------------------------------------------------------

def test_registry_names_and_modules():
    assert names() == ("linear", "task-arithmetic", "ties", "dare-linear", "dare-ties", "slerp", "mam")
    for name in names():
        module = method(name)
        assert name in module.NAMES
        assert isinstance(module.NEEDS_BASE, bool)
        low, high = module.MODELS
        assert low >= 1 and (high is None or high >= low)
    assert method("dare_ties") is method("dare-ties")  # mergekit's spelling
    assert method("Task_Arithmetic") is method("task-arithmetic")


def test_unknown_method_is_one_line_with_the_names():
    with pytest.raises(SurgeonError) as e:
        method("tie")
    text = str(e.value)
    assert "\n" not in text and "did you mean 'ties'" in text and "slerp" in text


def test_lambda_is_spelled_lambda():
    assert make_params("ties", {"lambda": 0.5}).lambda_ == 0.5
    assert make_params("ties", {}).normalize is True
    assert make_params("linear", {}).normalize is True
    assert make_params("task-arithmetic", {}).normalize is False
    assert make_params("dare-ties", {}).consensus == "sum"
    assert make_params("dare-linear", {}).consensus is None


# --- each formula against its transcription ------------------------------------------------------

@pytest.mark.parametrize("normalize", [True, False])
def test_linear_formula(normalize):
    _, xs = _tensors(3)
    ws = (0.2, 0.5, 0.7)
    close(_combine("linear", _task(xs, weights=ws), normalize=normalize), ref_linear(xs, ws, normalize))


@pytest.mark.parametrize("normalize", [False, True])
def test_task_arithmetic_formula(normalize):
    base, xs = _tensors(3)
    ws = (0.3, -0.4, 0.9)
    vectors = [(x - base).double().numpy() for x in xs]
    out = _combine("task-arithmetic", _task(xs, base, ws), normalize=normalize, **{"lambda": 0.8})
    close(out, ref_task_vectors(xs, base, ws, 0.8, normalize, vectors))


@pytest.mark.parametrize("normalize,consensus", [(True, "sum"), (False, "sum"), (True, "count")])
def test_ties_formula(normalize, consensus):
    base, xs = _tensors(3)
    ws, ds = (0.5, 0.3, 0.8), (0.5, 0.7, 0.3)
    vectors = [ref_trim((x - base).double().numpy(), d) for x, d in zip(xs, ds)]
    out = _combine("ties", _task(xs, base, ws, ds), normalize=normalize, consensus=consensus, **{"lambda": 1.3})
    close(out, ref_task_vectors(xs, base, ws, 1.3, normalize, vectors, consensus))


def test_ties_trims_to_density():
    from surgeon.merging.methods.common import magnitude_trim

    d = torch.randn(10, 10)
    kept = magnitude_trim(d, 0.3)
    assert int((kept != 0).sum()) == 30
    assert float(kept.abs()[kept != 0].min()) >= float(d.abs()[kept == 0].max())


@pytest.mark.parametrize("name,consensus", [("dare-linear", None), ("dare-ties", "sum")])
def test_dare_formula(name, consensus):
    from surgeon.merging.methods.dare import keep_mask

    base, xs = _tensors(3)
    ws, ds = (0.5, 0.3, 0.8), (0.5, 0.7, 0.3)
    task = _task(xs, base, ws, ds)
    vectors = []
    for i, (x, d) in enumerate(zip(xs, ds)):
        mask = keep_mask(x.shape, d, 7, task.key, i).double().numpy()
        vectors.append((x - base).double().numpy() * mask / d)
    out = _combine(name, task, seed=7, **{"lambda": 0.9})
    close(out, ref_task_vectors(xs, base, ws, 0.9, False, vectors, consensus))


def test_dare_keeps_density_fraction():
    from surgeon.merging.methods.dare import keep_mask

    kept = keep_mask((200, 500), 0.3, 0, "w", 0).float().mean().item()
    assert abs(kept - 0.3) < 0.01


@pytest.mark.parametrize("t", [0.25, 0.5, 0.9])
def test_slerp_formula(t):
    _, (v0, v1) = _tensors(2)
    close(_combine("slerp", _task((v0, v1)), t=t), ref_slerp(v0, v1, t))


def test_slerp_falls_back_to_lerp_when_colinear():
    v0 = torch.randn(4, 3)
    v1 = 2.5 * v0
    out = _combine("slerp", _task((v0, v1)), t=0.3)
    close(out, (0.7 * v0.double() + 0.3 * v1.double()).numpy())


# --- the defining properties ---------------------------------------------------------------------

def test_weights_and_t_of_0_and_1_give_the_inputs_exactly():
    base, xs = _tensors(2)
    assert torch.equal(_combine("linear", _task(xs, weights=(1.0, 0.0))), xs[0])
    assert torch.equal(_combine("linear", _task(xs, weights=(0.0, 1.0)), normalize=False), xs[1])
    for name in ("task-arithmetic", "ties", "dare-linear", "dare-ties"):
        assert torch.equal(_combine(name, _task(xs, base, (0.0, 0.0))), base), name
        assert torch.equal(_combine(name, _task(xs, base, (1.0, 0.0))), xs[0]), name
        assert torch.equal(_combine(name, _task(xs, base, (0.0, 1.0)), **{"lambda": 1.0}), xs[1]), name
        assert torch.equal(_combine(name, _task(xs, base, (0.4, 0.6)), **{"lambda": 0.0}), base), name
    assert torch.equal(_combine("slerp", _task(xs), t=0.0), xs[0])
    assert torch.equal(_combine("slerp", _task(xs), t=1.0), xs[1])


@pytest.mark.parametrize("normalize", [False, True])
def test_ties_with_density_1_and_equal_signs_is_task_arithmetic(normalize):
    base, _ = _tensors(1)
    g = torch.Generator().manual_seed(3)
    xs = tuple(base + torch.rand(base.shape, generator=g) + 0.1 for _ in range(3))  # every delta > 0
    task = _task(xs, base, (0.2, 0.5, 0.4))
    ties = _combine("ties", task, normalize=normalize)
    ta = _combine("task-arithmetic", task, normalize=normalize)
    torch.testing.assert_close(ties, ta, rtol=1e-6, atol=1e-6)


def test_dare_with_density_1_is_task_arithmetic():
    base, xs = _tensors(3)
    task = _task(xs, base, (0.2, -0.5, 0.4))
    assert torch.equal(_combine("dare-linear", task, seed=5), _combine("task-arithmetic", task))
    assert torch.equal(_combine("dare-ties", task, seed=5, normalize=True), _combine("ties", task))


def test_dare_drop_of_nothing_is_the_identity():
    base, xs = _tensors(1)
    assert torch.equal(_combine("dare-linear", _task(xs, base, (1.0,), (1.0,)), seed=1), xs[0])


def test_dare_seed_is_reproducible_and_order_independent():
    base, xs = _tensors(3)
    a = _task(xs, base, (0.5, 0.5, 0.5), (0.4, 0.5, 0.6), key="a")
    b = _task(xs, base, (0.5, 0.5, 0.5), (0.4, 0.5, 0.6), key="b")
    first = [_combine("dare-ties", t, seed=11) for t in (a, b)]
    second = [_combine("dare-ties", t, seed=11) for t in (b, a)][::-1]
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not torch.equal(first[0], first[1])  # each tensor has its own mask
    assert not torch.equal(_combine("dare-ties", a, seed=12), first[0])  # and the seed matters
    # a model's mask does not depend on the other models
    two = _task(xs[:2], base, (0.5, 0.0), (0.4, 0.5), key="a")
    one = _task(xs[:1], base, (0.5,), (0.4,), key="a")
    assert torch.equal(_combine("dare-linear", two, seed=3), _combine("dare-linear", one, seed=3))


REQUIRED = {"slerp": {"t": 0.4}, "mam": {"lam": 0.4}}  # parameters without a default


def _count(name: str, most: int) -> int:
    """As many models as `name` takes, at most `most`."""
    low, high = method(name).MODELS
    return max(low, most if high is None else min(high, most))


def test_inputs_are_never_modified():
    base, xs = _tensors(3)
    before = [x.clone() for x in (base,) + xs]
    for name in names():
        n = _count(name, 3)
        _combine(name, _task(xs[:n], base, (0.3, 0.3, 0.4)[:n], (0.5, 0.5, 0.5)[:n] if method(name).USES_DENSITY
                              else None), **REQUIRED.get(name, {}))
    assert all(torch.equal(x, y) for x, y in zip(before, (base,) + xs))


def test_shapes_of_every_kind():
    for shape in [(), (7,), (3, 4, 5)]:
        base, xs = _tensors(2, shape)
        for name in names():
            n = _count(name, 2)
            out = _combine(name, _task(xs[:n], base, (0.5, 0.5)[:n], (0.5, 0.5)[:n] if method(name).USES_DENSITY else None),
                           **REQUIRED.get(name, {}))
            assert out.shape == xs[0].shape and out.dtype == torch.float32, (name, shape)


def test_linear_weights_summing_to_0_is_a_user_error():
    _, xs = _tensors(2)
    with pytest.raises(SurgeonError, match="sum to 0"):
        _combine("linear", _task(xs, weights=(1.0, -1.0)))


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_every_tensor_of_two_tiny_models(family):
    """Every float tensor of two tiny models of a family, merged per tensor: the formula holds on
    real shapes (biases, norms, embeddings), and t/weights of 0 give a model back."""
    from surgeon.tiny import build_tiny

    a, b, base = (build_tiny(family, seed=s).state_dict() for s in (1, 2, 3))
    for key, x in a.items():
        if not x.is_floating_point():
            continue
        xs = (x.float(), b[key].float())
        task = _task(xs, base[key].float(), (0.6, 0.4), (0.5, 0.8), key=key)
        if x.numel() <= 1024:  # the element-wise transcription is slow; every kind of tensor is this small
            vectors = [ref_trim((v - task.base).double().numpy(), d) for v, d in zip(xs, task.densities)]
            close(_combine("ties", task), ref_task_vectors(xs, task.base, task.weights, 1.0, True, vectors, "sum"))
        assert torch.equal(_combine("slerp", _task(xs, key=key), t=0.0), xs[0])
        assert torch.equal(_combine("linear", _task(xs, weights=(0.0, 1.0), key=key)), xs[1])


# --- against mergekit itself, where it is installed (never a dependency) -------------------------

def _mergekit_group(xs, base):
    from mergekit.merge_methods.base import TensorGroup

    return TensorGroup.from_tensors([base, *xs], base_index=0)  # ids: base 0, models 1..n


@pytest.mark.parametrize("name,normalize,lam", [("ties", True, 1.0), ("ties", False, 0.7),
                                                ("task_arithmetic", False, 1.0), ("task_arithmetic", True, 0.5)])
def test_equal_to_mergekit_task_vector_methods(name, normalize, lam):
    pytest.importorskip("mergekit")
    from mergekit.merge_methods.registry import get

    base, xs = _tensors(3, (16, 12), seed=4)
    ws, ds = (0.5, 0.3, 0.8), (0.5, 0.7, 0.3) if name == "ties" else (1.0, 1.0, 1.0)
    theirs = get(name).merge_group(
        _mergekit_group(xs, base), weight={i + 1: w for i, w in enumerate(ws)},
        density={i + 1: d for i, d in enumerate(ds)}, normalize=normalize, rescale=False, int8_mask=False,
        **{"lambda": lam})
    ours = _combine(name.replace("_", "-"), _task(xs, base, ws, ds), normalize=normalize, **{"lambda": lam})
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 1.0])
def test_equal_to_mergekit_slerp(t):
    pytest.importorskip("mergekit")
    from mergekit.merge_methods.slerp import slerp

    _, (v0, v1) = _tensors(2, (8, 6), seed=5)
    theirs = slerp(torch.tensor([t]), v0[None], v1[None])[0]
    torch.testing.assert_close(_combine("slerp", _task((v0, v1)), t=t), theirs, rtol=1e-5, atol=1e-6)
