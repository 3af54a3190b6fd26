"""What the task-vector methods share (mergekit's "generalized task arithmetic"): task vectors, an
optional sparsification per model (TIES's magnitude trim, DARE's random drop), an optional sign
consensus, the weighted sum, the optional normalisation and the lambda scale.

    deltas_i  = sparsify_i(x_i - base)
    wd_i      = w_i * deltas_i
    mask_i    = sign(wd_i) == elected sign       (consensus only; elected = sign of sum_i wd_i, or of
                                                  sum_i sign(wd_i) for "count"; 0 elects +)
    mixed     = sum_i wd_i * mask_i
    divisor   = sum_i w_i * mask_i  (consensus; 0 -> 1)   or   sum_i w_i  (|.| < 1e-8 -> 1)
    result    = base + lambda * (mixed / divisor if normalize else mixed)

The code follows these operations in this order (each chunked path gives the same floats), so
results equal the definition's; the sign consensus is computed as sums of max(+-wd_i, 0), exact
rewrites of the masked sums (see _consensus_chunk).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

Consensus = Literal["sum", "count"]


class BaseParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def lambda_field():
    # `lambda` is a Python keyword: the attribute is lambda_, the config key (and mergekit's) is lambda
    return Field(1.0, alias="lambda", allow_inf_nan=False, description="scale of the merged task vector")


def magnitude_trim(delta, density: float):
    """Keep the top `density` fraction of `delta` by magnitude (k = int(density * numel), at least 1, as
    mergekit counts), zero the rest; `delta` is not modified. Exactly k elements are kept: of elements
    whose magnitude equals the k-th largest, the lowest flat indices (see top_k_mask)."""
    if density >= 1.0:
        return delta
    return magnitude_trim_(delta.clone(), density)


def magnitude_trim_(delta, density: float):
    """magnitude_trim in place (the merge's own task vectors). The magnitude is taken in float32."""
    import torch

    n = delta.numel()
    if density >= 1.0 or n == 0:
        return delta
    k = max(1, int(density * n))

    def magnitude_of(out=None):
        d = delta.detach()
        return torch.abs(d, out=out) if d.dtype == torch.float32 else torch.abs(d.float(), out=out)

    with _scratch(n) as work:  # reused memory: a fresh array costs its page faults, and slows the select
        magnitude = magnitude_of(out=work.view(delta.shape))
        flat = work.numpy()
        kth, unique = _kth_largest(flat, k, in_place=True)  # no copy: `flat` is reordered, made again below
        if kth == 0.0 and unique is not None:  # k or more zeros: every non-zero is kept, the zeros are 0
            return delta
        if unique:  # exactly k elements >= the k-th largest: one comparison, chunk by chunk in the cache
            kth, rows = float(kth), delta.reshape(-1)
            for part in chunks(n):
                d = rows[part]
                keep = torch.abs(d if d.dtype == torch.float32 else d.float(), out=work[: d.numel()])
                d.mul_(keep.ge_(kth))  # 1.0 / 0.0 in float: no bool -> float conversion in the product
            return delta
        magnitude_of(out=magnitude)
        keep = torch.from_numpy(top_k_mask(flat, k, selected=(kth, unique))).reshape(delta.shape)
    return delta.mul_(keep)  # a dropped finite x becomes +-0.0, equal to 0


_POOL: list = []  # float32 scratch tensors, reused from tensor to tensor (at most POOL_SIZE kept)
POOL_SIZE = 2  # one per concurrent trim (_map runs two)
_POOL_LOCK = threading.Lock()


@contextmanager
def _scratch(numel: int):
    """A flat float32 tensor of `numel` elements from the pool, returned to it afterwards: memory stays
    at POOL_SIZE times the largest tensor, allocated once."""
    import torch

    with _POOL_LOCK:
        fits = [b for b in _POOL if b.numel() >= numel]
        buf = min(fits, key=lambda b: b.numel()) if fits else None
        if buf is not None:
            _POOL.remove(buf)
        elif _POOL:
            _POOL.remove(min(_POOL, key=lambda b: b.numel()))  # too small: replaced by a larger one
    if buf is None:
        buf = torch.empty(numel, dtype=torch.float32)
    try:
        yield buf[:numel]
    finally:
        with _POOL_LOCK:
            _POOL.append(buf)
            while len(_POOL) > POOL_SIZE:
                _POOL.remove(min(_POOL, key=lambda b: b.numel()))


def _kth_largest(flat, k: int, *, in_place: bool = False):
    """(the k-th largest value of the 1-d float32 array `flat`, unique) for 1 <= k < n, O(n) by one
    introselect (np.partition; in_place: reorders `flat` instead of copying it): unique is True when
    exactly k elements are >= it (no tie at the threshold), False when some are equal to it beyond the
    k, None when NaNs are among them."""
    import numpy as np

    n = flat.size
    if in_place:
        flat.partition(n - k)
        part = flat
    else:
        part = np.partition(flat, n - k)  # NaNs go last, as the largest
    kth = part[n - k]
    if np.isnan(part[-1]):
        return kth, None
    return kth, bool(n - k == 0 or part[: n - k].max() < kth)


def top_k_mask(magnitude, k: int, *, selected=None):
    """Boolean mask of the `k` largest entries of `magnitude` (a non-negative float32 numpy array), exactly
    k of them: everything above the k-th largest value, then, of the entries equal to it, the lowest flat
    indices first (a deterministic tie rule; torch.topk leaves ties to the implementation). NaN counts as
    the largest value, as in torch.topk. O(n): one introselect, two comparisons. `selected`: the
    _kth_largest result, where the caller has it."""
    import numpy as np

    flat = magnitude.reshape(-1)
    n = flat.size
    if k >= n:
        return np.ones(magnitude.shape, dtype=bool)
    keep = np.zeros(n, dtype=bool)
    if k <= 0:
        return keep.reshape(magnitude.shape)
    kth, unique = selected if selected is not None else _kth_largest(flat, k)
    if np.isnan(kth):  # k or fewer non-NaN entries can be kept: NaNs only, lowest index first
        keep[np.flatnonzero(np.isnan(flat))[:k]] = True
        return keep.reshape(magnitude.shape)
    np.greater(flat, kth, out=keep)
    if unique is None:
        keep |= np.isnan(flat)
    at = flat == kth
    if unique:  # no tie beyond the k-th: every equal entry is kept
        keep |= at
    else:
        need = k - int(np.count_nonzero(keep))  # entries equal to the k-th value still to keep (>= 1)
        keep[np.flatnonzero(at)[:need]] = True
    return keep.reshape(magnitude.shape)


def merge_task_vectors(task, *, lam: float, normalize: bool, consensus: Optional[Consensus] = None,
                       sparsify: Optional[Callable] = None):
    """base + lam * (normalised) sum of weighted, sparsified task vectors; see the module docstring.
    sparsify(delta, model_index, density) -> delta, applied where density < 1, may work in place on
    delta (the merge's own). Memory: the n task vectors plus a few tensors of the same size (the
    consensus works in chunks of CHUNK elements). The task vectors of two models are made at a time
    for large tensors (see _map)."""
    import torch

    if task.base is None:
        raise ValueError(f"{task.key}: this method needs the base model's tensor")
    base, weights, densities = task.base, task.weights, task.densities
    shortcut = _exact_input(task, lam, normalize)
    if shortcut is not None:
        return shortcut

    def task_vector(i):
        d = torch.sub(task.inputs[i], base)
        if sparsify is not None and densities[i] < 1.0:
            d = sparsify(d, i, densities[i])
        if weights[i] != 1.0:  # x * 1.0 is x: the pass is skipped, not a rounding
            d.mul_(weights[i])
        return d

    if consensus is None and (sparsify is None or all(d >= 1.0 for d in densities)):
        return _task_arithmetic_chunked(task, lam=lam, normalize=normalize)
    weighted = _map(task_vector, range(len(task.inputs)), base.numel())
    if consensus is None:
        mixed = weighted[0]
        for wd in weighted[1:]:
            mixed.add_(wd)
        del weighted
        total = float(sum(weights))
        if normalize:
            mixed.div_(total if abs(total) >= 1e-8 else 1.0)
    else:
        # the consensus is element-wise: run it in chunks that stay in the CPU's cache, into the
        # first task vector's memory (each chunk reads only its own elements)
        out = weighted[0].reshape(-1)
        flats = [wd.reshape(-1) for wd in weighted]
        base_flat = base.reshape(-1)
        for part in chunks(out.numel()):
            _consensus_chunk([f[part] for f in flats], weights, base_flat[part], out[part],
                             lam=lam, normalize=normalize, consensus=consensus)
        return weighted[0]
    if lam != 1.0:
        mixed.mul_(lam)
    return mixed.add_(base)


def _task_arithmetic_chunked(task, *, lam: float, normalize: bool):
    """The merge without sparsification or consensus, element-wise in cache-sized chunks straight from
    the inputs into the output (no full-size task vector): the same operations, in the same order."""
    import torch

    base = task.base.reshape(-1)
    inputs = [x.reshape(-1) for x in task.inputs]
    out = torch.empty_like(base)
    buf = torch.empty(min(CHUNK, base.numel()), dtype=base.dtype)
    total = float(sum(task.weights))
    divisor = total if abs(total) >= 1e-8 else 1.0
    for part in chunks(base.numel()):
        acc, b = out[part], base[part]
        tmp = buf[: acc.numel()]
        for i, (w, x) in enumerate(zip(task.weights, inputs)):
            d = torch.sub(x[part], b, out=acc if i == 0 else tmp)
            if w != 1.0:
                d.mul_(w)
            if i:
                acc.add_(d)
        if normalize:
            acc.div_(divisor)
        if lam != 1.0:
            acc.mul_(lam)
        acc.add_(b)
    return out.reshape(task.base.shape)


def chunks(numel: int):
    """Slices of CHUNK elements covering range(numel)."""
    return (slice(start, start + CHUNK) for start in range(0, numel, CHUNK))


# elements per chunk of the consensus (float32: 256 KiB a tensor, a few of them fit in L2)
CHUNK = 1 << 16


def _consensus_chunk(weighted: list, weights, base, out, *, lam: float, normalize: bool, consensus: Consensus):
    """out = base + lam * (disjoint mean or sum of the agreeing weighted vectors), for one chunk; the
    weighted chunks are consumed (out may be weighted[0]).

    It runs in "elected space": t_i = w_i d_i * e with e = +-1 the elected sign, so an agreeing element
    is t_i > 0 and the sum of the agreeing ones is the sum of max(t_i, 0); every product with e is
    exact, so the result equals the definition's operations, in its order."""
    import torch

    elected = _elected_sign(weighted, consensus)
    mixed = divisor = agree = None
    for w, t in zip(weights, weighted):
        t.mul_(elected)  # into elected space; exact
        if normalize:
            agree = torch.gt(t, 0.0, out=agree if agree is not None else torch.empty_like(t))  # 1.0 / 0.0
            divisor = agree.mul(w) if divisor is None else divisor.add_(agree, alpha=w)  # w * 1.0 exact
        t.clamp_(min=0.0)  # a disagreeing element (or a zero) adds 0
        mixed = t if mixed is None else mixed.add_(t)
    if normalize:
        if min(weights) > 0.0:  # a non-zero divisor is >= the smallest weight; 0 -> it, over a mixed of 0
            divisor.clamp_(min=min(weights))
        else:
            divisor.add_(divisor == 0)  # no agreeing model: divide by 1
        mixed.div_(divisor)
    mixed.mul_(elected)  # back from elected space; exact
    if lam != 1.0:
        mixed.mul_(lam)
    torch.add(mixed, base, out=out)


# below this many elements a tensor's task vectors are made one after the other
PARALLEL_MIN = 1 << 18


def _map(fn, items, numel: int) -> list:
    """[fn(i) for i in items], two at a time for large tensors: the trim's selection (numpy) runs on
    one core and releases the GIL, so two models' trims use the machine's two. Each result depends on
    its own inputs only, so the order of work changes nothing."""
    items = list(items)
    if len(items) < 2 or numel < PARALLEL_MIN:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    # threads for this tensor only: a thread kept alive keeps its OpenMP team spinning, which slows
    # every torch op of the main thread (measured: 2x)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(fn, items))


def _elected_sign(weighted: list, consensus: Consensus):
    """Per element the elected sign as +-1.0: the sign of the sum of the weighted vectors, or of the sum
    of their signs for "count"; a tie (0) elects +. (-0.0 only sums from all-zero terms, which agree
    with neither sign, so copysign's -1 there changes nothing.)"""
    import torch

    terms = weighted if consensus == "sum" else (torch.sign(wd) for wd in weighted)
    votes = None
    for v in terms:
        if votes is None:
            votes = v
        elif votes is weighted[0]:
            votes = torch.add(votes, v)  # a new tensor: the weighted vectors stay as they are
        else:
            votes.add_(v)
    if votes is weighted[0]:
        votes = votes.clone()
    return torch.full_like(votes, 1.0).copysign_(votes)


def _exact_input(task, lam: float, normalize: bool):
    """Where the result is one input by construction, that input bit for bit (base + (x - base) is
    x only up to rounding): every weight 0 gives the base; one model with a non-zero weight, kept
    whole (density 1), with an effective coefficient of exactly 1 gives that model."""
    nonzero = [i for i, w in enumerate(task.weights) if w != 0.0]
    if not nonzero or lam == 0.0:
        return task.base.clone()
    if len(nonzero) == 1:
        i = nonzero[0]
        coefficient = lam if normalize else lam * task.weights[i]
        if coefficient == 1.0 and task.densities[i] >= 1.0:
            return task.inputs[i].clone()
    return None
