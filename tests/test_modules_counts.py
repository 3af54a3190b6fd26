"""Parameter counts of the adapter modules against the formulas and tables of petl-facts.md and the papers.

The tables count, per layer and sub-layer, the module plus the LayerNorm in front of the sub-layer that
the method unfreezes (1,536 at d = 768); that LayerNorm belongs to the framework, so here the 12-layer
total is 12 * (module + 1,536)."""
import pytest

from surgeon.modules import ADAPTERS, Bottleneck, ConformerAdapter, Convpass, DenseMoA, LookAsideAdapter, SoftMoA
from surgeon.modules.common import count_parameters

D, LAYERS, LN = 768, 12, 1536


def twelve_layers(module, sublayers=1):
    return LAYERS * sublayers * (count_parameters(module) + LN)


@pytest.mark.parametrize("b", [1, 8, 12, 24])
def test_formulas_per_module(b):
    assert count_parameters(Bottleneck(D, b)) == 1537 * b + 768
    assert count_parameters(Convpass(D, b)) == 1538 * b + 3 * b * b + 768
    for k in (8, 31):
        assert count_parameters(ConformerAdapter(D, b, kernel=k)) == 2304 + 2309 * b + b * k


@pytest.mark.parametrize("module, sublayers, expected", [
    (lambda: Bottleneck(D, 12), 1, 248_976),                  # Bottleneck Pfeiffer, RR 64
    (lambda: Bottleneck(D, 12), 2, 497_952),                  # Bottleneck Houlsby
    (lambda: Convpass(D, 12), 1, 254_304),                    # Convpass Pfeiffer, Conv1d(b, b, 3)
    (lambda: Convpass(D, 12), 2, 508_608),
    (lambda: ConformerAdapter(D, 8, kernel=31), 1, 270_720),  # Conformer Pfeiffer, RR 96, k 31
    (lambda: ConformerAdapter(D, 8, kernel=31), 2, 541_440),
    (lambda: Bottleneck(D, 24), 1, 470_304),                  # single adapter of the MoA paper
    (lambda: SoftMoA(D, 14, 1, slots=1), 1, 534_696),
    (lambda: DenseMoA(D, 14, 1), 1, 534_864),
    (lambda: SoftMoA(D, 7, 1), 1, 276_564),
    (lambda: DenseMoA(D, 7, 1), 1, 276_648),
    (lambda: SoftMoA(D, 14, 1, slots=2), 1, 663_720),
    (lambda: SoftMoA(D, 14, 1), 2, 1_069_392),                # Soft-MoA Houlsby
])
def test_table_counts(module, sublayers, expected):
    assert twelve_layers(module(), sublayers) == expected


def test_module_parts_of_the_moa_counts():
    soft, dense = SoftMoA(D, 14, 1), DenseMoA(D, 14, 1)
    assert count_parameters(soft.experts) == 14 * 2305 == count_parameters(dense.experts)
    assert soft.phi.shape == (D, 14, 1)
    assert count_parameters(dense.router) == 768 * 14 + 14
    assert count_parameters(SoftMoA(D, 14, 1, normalize=True)) == count_parameters(soft) + 1  # the scale


def test_paper_000_table_1_rounded_counts():
    """Table 1 of paper 000: Convpass single (b = 24) 491K; the Convpass MoAs 535K."""
    assert round(twelve_layers(Convpass(D, 24)), -3) == 491_000
    assert round(twelve_layers(SoftMoA(D, 14, 1, expert="convpass")), -3) == 535_000
    expert = 1538 * 1 + 3 * 1 + 768
    assert count_parameters(DenseMoA(D, 14, 1, expert="convpass")) == 14 * expert + 768 * 14 + 14


def test_look_aside_adapter_counts_paper_004():
    """Paper 004: U_down Conv(d -> r), U_up Conv(r -> d), no biases: 2 k d r per adapter (k taps). Its
    Table 1 rows (one adapter per layer, 12 layers, plus its LayerNorm + Linear(768, 44) head) are 2.026M
    (r = 36) and 4.017M (r = 72), and r was adjusted to equalise the kernels: (1,1) r = 108 and (3,3)
    r = 12 match 1x3 / 3x1 at r = 36."""
    head = 1536 + 768 * 44 + 44

    def total(r, axis="time", kernel=3, **kw):
        return LAYERS * count_parameters(LookAsideAdapter(D, r, axis=axis, kernel=kernel, **kw))

    assert count_parameters(LookAsideAdapter(D, 36)) == 2 * 3 * D * 36 == 165_888
    assert count_parameters(LookAsideAdapter(D, 36, bias=True)) == 165_888 + 36 + D
    assert total(36, "time") == total(36, "frequency") == total(12, "grid") == total(108, kernel=1) == 1_990_656
    assert total(36) + head == 2_026_028 and total(72) + head == 4_016_684  # 2.026M, 4.017M
    assert total(72, "frequency") == total(24, "grid") == total(216, kernel=1)


def test_look_aside_adapter_kernel_shapes():
    shapes = {axis: tuple(LookAsideAdapter(D, 4, axis=axis).down.weight.shape[2:])
              for axis in ("time", "frequency", "grid")}
    assert shapes == {"time": (1, 3), "frequency": (3, 1), "grid": (3, 3)}  # (frequency, time)
    assert LookAsideAdapter(D, 4).down.bias is None and LookAsideAdapter(D, 4).up.bias is None


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_registry_builds_every_adapter(name):
    cls = ADAPTERS[name]
    args = (D, 4, 8) if name.endswith("moa") else (D, 8)
    assert count_parameters(cls(*args)) > 0
