"""TIES's magnitude trim (issue 14 item 4): an exact O(n) selection of the top k by magnitude, equal to
torch.topk's set where no two magnitudes tie at the threshold, and at a tie the lowest flat indices."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from surgeon.merging.methods import common
from surgeon.merging.methods.common import _kth_largest, magnitude_trim, magnitude_trim_, merge_task_vectors, top_k_mask
from surgeon.merging.tasks import TensorTask


def _mask(values, k):
    return top_k_mask(np.asarray(values, dtype=np.float32), k).tolist()


@pytest.mark.parametrize("n,seed", [(1, 0), (2, 1), (97, 2), (1000, 3), (4096, 4)])
def test_top_k_is_topk_without_ties(n, seed):
    g = torch.Generator().manual_seed(seed)
    magnitude = torch.randn(n, generator=g).abs()
    assert torch.unique(magnitude).numel() == n  # no ties: the set is defined
    for k in sorted({1, max(1, n // 3), max(1, n // 2), max(1, n - 1), n}):
        expected = torch.zeros(n, dtype=torch.bool)
        expected[torch.topk(magnitude, k).indices] = True
        got = top_k_mask(magnitude.numpy(), k)
        assert got.sum() == k and torch.equal(torch.from_numpy(got), expected), k


def test_ties_at_the_threshold_keep_the_lowest_indices():
    assert _mask([1, 2, 2, 2, 3], 3) == [False, True, True, False, True]
    assert _mask([2, 2, 2, 2], 2) == [True, True, False, False]
    assert _mask([5, 1, 5], 1) == [True, False, False]  # k = 1: the largest, the first of equals
    assert _mask([0, 0, 0, 4, 0], 2) == [True, False, False, True, False]


def test_edge_counts():
    assert _mask([3, 1, 2], 3) == [True, True, True]  # k = n
    assert _mask([3, 1, 2], 5) == [True, True, True]
    assert _mask([3, 1, 2], 0) == [False, False, False]
    assert top_k_mask(np.zeros(0, dtype=np.float32), 1).shape == (0,)
    assert magnitude_trim(torch.zeros(0, 3), 0.5).shape == (0, 3)  # empty
    assert _mask(np.array([[4, 1], [2, 3]]), 2) == [[True, False], [False, True]]  # shape kept


def test_nan_counts_as_largest():
    nan = float("nan")
    assert _mask([1, nan, 3], 1) == [False, True, False]
    assert _mask([1, nan, 3], 2) == [False, True, True]
    assert _mask([nan, nan, 3], 1) == [True, False, False]


def test_trim_keeps_exactly_k_values_and_leaves_its_input():
    d = torch.tensor([[0.5, -3.0, 2.0], [-2.0, 1.0, 2.0]])
    before = d.clone()
    out = magnitude_trim(d, 0.5)  # k = 3: -3 and the first two of the three 2s (flat index 2, 3)
    assert torch.equal(d, before)
    assert torch.equal(out, torch.tensor([[0.0, -3.0, 2.0], [-2.0, 0.0, 0.0]]))
    assert torch.equal(magnitude_trim(d, 1.0), d)
    mostly_zero = torch.tensor([0.0, 0.0, 5.0, 0.0, -1.0])  # k = 3 reaches the zeros: every non-zero kept
    assert torch.equal(magnitude_trim(mostly_zero, 0.6), mostly_zero)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_ranked_in_float32(dtype):
    # values exact in both formats: nothing here depends on how the CPU rounds to bf16
    d = torch.tensor([0.5, -4.0, 1.5, -0.25, 3.0, -1.5], dtype=dtype)
    out = magnitude_trim(d, 0.5)
    assert out.dtype == dtype
    assert torch.equal(out.float(), torch.tensor([0.0, -4.0, 1.5, 0.0, 3.0, 0.0]))


def test_fast_path_equals_the_general_mask():
    g = torch.Generator().manual_seed(5)
    d = torch.randn(300, 200, generator=g)
    flat = d.abs().numpy().reshape(-1)
    for density in (0.01, 0.3, 0.5, 0.9):
        k = max(1, int(density * d.numel()))
        kth, unique = _kth_largest(flat, k)
        assert unique  # this seed has no tie at these thresholds
        mask = torch.from_numpy(top_k_mask(flat, k)).reshape(d.shape)
        assert torch.equal(magnitude_trim_(d.clone(), density), d * mask)


def _reference_ties(task, lam=1.0):
    """The definition, written out with torch.topk and boolean masks (the implementation before the
    O(n) selection): trim, elect by the sign of the sum, disjoint mean."""
    base = task.base
    weighted = []
    for x, w, density in zip(task.inputs, task.weights, task.densities):
        d = x - base
        k = max(1, int(density * d.numel()))
        kept = torch.zeros_like(d)
        keep = torch.topk(d.abs().reshape(-1), k).indices
        kept.view(-1)[keep] = d.reshape(-1)[keep]
        weighted.append(kept * w)
    elected = torch.where(sum(weighted) >= 0, 1.0, -1.0)
    mixed, divisor = torch.zeros_like(base), torch.zeros_like(base)
    for w, wd in zip(task.weights, weighted):
        agree = (wd * elected > 0).float()
        mixed += wd * agree
        divisor += w * agree
    divisor[divisor == 0] = 1.0
    return base + lam * (mixed / divisor)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (0.5, 0.3, 0.8), (1.0, -0.5, 0.7)])
def test_ties_on_a_large_tensor_equals_the_definition_in_parallel_and_in_turn(weights, monkeypatch):
    g = torch.Generator().manual_seed(7)
    base = torch.randn(512, 600, generator=g)  # above PARALLEL_MIN: two models at a time
    xs = tuple(base + 0.1 * torch.randn(base.shape, generator=g) for _ in range(3))
    task = TensorTask("w", xs, base, weights, (0.5, 0.3, 0.7))
    trim = lambda d, i, density: magnitude_trim_(d, density)  # noqa: E731
    parallel = merge_task_vectors(task, lam=0.9, normalize=True, consensus="sum", sparsify=trim)
    monkeypatch.setattr(common, "PARALLEL_MIN", 1 << 62)
    in_turn = merge_task_vectors(task, lam=0.9, normalize=True, consensus="sum", sparsify=trim)
    assert torch.equal(parallel, in_turn)
    torch.testing.assert_close(parallel, _reference_ties(task, lam=0.9), rtol=0, atol=0)


@pytest.mark.parametrize("chunk", [7, 64, 1 << 16])
def test_chunked_paths_equal_the_whole_tensor_operations(chunk, monkeypatch):
    from surgeon.merging.methods import linear, make_params

    monkeypatch.setattr(common, "CHUNK", chunk)  # chunk boundaries inside the tensor, and a last short one
    g = torch.Generator().manual_seed(8)
    base = torch.randn(37, 29, generator=g)
    xs = tuple(base + torch.randn(base.shape, generator=g) for _ in range(3))
    ws = (0.5, 1.0, -0.3)
    task = TensorTask("w", xs, base, ws, (0.5, 0.4, 0.6))
    lin = xs[0] * ws[0] + xs[1] * ws[1] + xs[2] * ws[2]
    assert torch.equal(linear.combine(task, make_params("linear", {"normalize": False})), lin)
    assert torch.equal(linear.combine(task, make_params("linear", {})), lin / sum(ws))
    ds = [(x - base) * w for x, w in zip(xs, ws)]
    assert torch.equal(merge_task_vectors(task, lam=0.7, normalize=False), (ds[0] + ds[1] + ds[2]) * 0.7 + base)
    trim = lambda d, i, density: magnitude_trim_(d, density)  # noqa: E731
    ties = merge_task_vectors(task, lam=0.9, normalize=True, consensus="sum", sparsify=trim)
    assert torch.equal(ties, _reference_ties(task, lam=0.9))


def test_scratch_memory_is_reused_across_sizes():
    # the magnitude goes into pooled scratch tensors: a larger tensor, then smaller ones, then larger
    # again must each be trimmed as if alone
    g = torch.Generator().manual_seed(9)
    for n in (5000, 30, 5000, 12000, 7):
        d = torch.randn(n, generator=g)
        k = max(1, int(0.4 * n))
        expected = d * torch.from_numpy(top_k_mask(d.abs().numpy(), k))
        assert torch.equal(magnitude_trim(d, 0.4), expected), n
    assert len(common._POOL) <= common.POOL_SIZE
