"""`petl_parameters` at AST-base (ASTConfig() dimensions, random weights) equals every exact count of
petl-facts.md: the fourteen table rows and the further verified counts; and paper 004's LoAA counts,
on the same model with its non-overlapping 16 x 16 patches and a 44-class head (EPIC-SOUNDS)."""
import pytest

# (method, options, exact count from petl-facts.md)
TABLE = [
    ("bottleneck", {}, 248_976),                                  # Pfeiffer, b = 12 (RR 64)
    ("bottleneck", {"placement": "houlsby"}, 497_952),
    ("convpass", {}, 254_304),
    ("convpass", {"placement": "houlsby"}, 508_608),
    ("conformer", {}, 270_720),                                   # b = 8 (RR 96), k = 31
    ("conformer", {"placement": "houlsby"}, 541_440),
    ("lora", {}, 221_184),                                        # q, v; r = 6 (RR 128)
    ("prefix", {"num_tokens": 24}, 221_184),
    ("prompt", {"deep": True, "num_tokens": 25}, 230_400),
    ("prompt", {"num_tokens": 300}, 230_400),
    ("bitfit", {}, 102_144),
    ("bottleneck", {"bottleneck": 24}, 470_304),                  # the MoA paper's single adapter
    ("soft-moa", {"num_experts": 14, "bottleneck": 1, "slots": 1}, 534_696),
    ("dense-moa", {"num_experts": 14, "bottleneck": 1}, 534_864),
]
MORE = [
    ("soft-moa", {"num_experts": 7}, 276_564),
    ("dense-moa", {"num_experts": 7}, 276_648),
    ("soft-moa", {"slots": 2}, 663_720),
    ("soft-moa", {"placement": "houlsby", "num_experts": 14}, 1_069_392),   # 14 per block: 14 + 14
    ("soft-moa", {"expert": "convpass"}, 535_368),                            # paper 000 Table 1: 535K
    ("dense-moa", {"expert": "convpass"}, 535_536),                           # 535K
    ("lora", {"rank": 12}, 442_368),
]


# Paper 000 Table 2: Houlsby MoAs, "14 adapters split equally between MHSA and FFN", 7 per block (the
# default); the paper prints no count, these follow from the per-block formulas (two blocks per layer,
# each with its sub-layer's LayerNorm: 18,432 more than the Pfeiffer 14).
HOULSBY = [
    ("soft-moa", {"placement": "houlsby"}, 553_128),
    ("dense-moa", {"placement": "houlsby"}, 553_296),
    ("soft-moa", {"placement": "houlsby", "expert": "convpass"}, 553_800),
    ("dense-moa", {"placement": "houlsby", "expert": "convpass"}, 553_968),
]


@pytest.fixture(scope="module")
def ast_base():
    import torch
    import transformers

    torch.manual_seed(0)
    # (the strides and the head size change no count of papers 000-002: only LoAA sees the grid)
    config = transformers.ASTConfig(frequency_stride=16, time_stride=16, num_labels=44)
    return transformers.ASTForAudioClassification(config).eval()


@pytest.mark.parametrize("method, options, expected", TABLE + MORE + HOULSBY,
                         ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}"
                              for m, o, _ in TABLE + MORE + HOULSBY])
def test_paper_counts(ast_base, method, options, expected):
    from surgeon.api import inject, strip, surgery

    inject(ast_base, method, **options)
    try:
        assert surgery(ast_base)["methods"][0]["petl_parameters"] == expected
    finally:
        strip(ast_base)


def test_defaults_are_the_papers(ast_base):
    """Without options each method takes the papers' defaults (the table's configurations)."""
    from surgeon.api import inject, strip, surgery

    for method, expected in (("bottleneck", 248_976), ("convpass", 254_304), ("conformer", 270_720),
                             ("lora", 221_184), ("prefix", 221_184), ("soft-moa", 534_696), ("dense-moa", 534_864)):
        inject(ast_base, method)
        assert surgery(ast_base)["methods"][0]["petl_parameters"] == expected, method
        strip(ast_base)
    inject(ast_base, "prompt", deep=True)
    assert surgery(ast_base)["methods"][0]["petl_parameters"] == 230_400
    strip(ast_base)
    for method in ("soft-moa", "dense-moa"):  # Houlsby: the paper's 7 + 7 experts per layer
        inject(ast_base, method, placement="houlsby")
        assert surgery(ast_base)["methods"][0]["options"]["num_experts"] == 7
        strip(ast_base)


def test_lora_scaling_is_alpha_over_rr(ast_base):
    from surgeon.api import inject, strip, surgery

    inject(ast_base, "lora")
    opts = surgery(ast_base)["methods"][0]["options"]
    strip(ast_base)
    assert (opts["rank"], opts["reduction"], opts["alpha"]) == (6, 128.0, 8.0)
    assert opts["scaling"] == 8 / 128


# Paper 004 (Tables 1-3): 2 k d r per adapter (no conv bias, no LayerNorm trained), 12 layers, plus the
# head it counts (LayerNorm + Linear(768, 44) = 35,372): Attn(T) r = 36 is 2.026M, r = 72 4.017M.
HEAD_44 = 1536 + 768 * 44 + 44
LOAA = [
    ({"placement": "pfeiffer", "location": "mhsa", "axis": "time", "bottleneck": 36}, 1_990_656, "2.026M"),
    ({"placement": "pfeiffer", "location": "ffn", "axis": "frequency", "bottleneck": 36}, 1_990_656, "2.026M"),
    ({"placement": "pfeiffer", "location": "mhsa", "axis": "time", "bottleneck": 72}, 3_981_312, "4.017M"),
    ({"placement": "pfeiffer", "location": "mhsa", "axis": "grid", "bottleneck": 12}, 1_990_656, "2.026M"),  # (3,3)
    ({"placement": "pfeiffer", "location": "mhsa", "kernel": 1, "bottleneck": 108}, 1_990_656, "2.026M"),  # (1,1)
    ({"placement": "pfeiffer", "location": "ffn", "kernel": 1, "bottleneck": 216}, 3_981_312, "4.017M"),
    ({}, 3_981_312, "4.017M"),                                              # Attn(T) + FFN(F), r = 36 ("5%")
    ({"bottleneck": 72}, 7_962_624, "7.998M"),                               # Attn(T) + FFN(F), r = 72 ("10%")
]


@pytest.mark.parametrize("options, petl, paper", LOAA, ids=[f"{p}-{'-'.join(map(str, o.values())) or 'default'}"
                                                            for o, _, p in LOAA])
def test_loaa_counts_are_paper_004s(ast_base, options, petl, paper):
    from surgeon.api import inject, strip, surgery

    inject(ast_base, "loaa", **options)
    try:
        assert surgery(ast_base)["methods"][0]["petl_parameters"] == petl
        trainable = sum(p.numel() for p in ast_base.parameters() if p.requires_grad)
        assert trainable == petl + HEAD_44
        assert f"{trainable / 1e6:.3f}M" == paper
    finally:
        strip(ast_base)


def test_loaa_biases_and_layernorms_are_options(ast_base):
    """--bias --train-norm give back the earlier accounting: 2,054,108 with the head, not 2,026,028."""
    from surgeon.api import inject, strip, surgery

    inject(ast_base, "loaa", placement="pfeiffer", axis="time", bias=True, train_norm=True)
    try:
        assert surgery(ast_base)["methods"][0]["petl_parameters"] == 12 * (165_888 + 36 + 768 + 1536) == 2_018_736
        assert sum(p.numel() for p in ast_base.parameters() if p.requires_grad) == 2_054_108
    finally:
        strip(ast_base)


# The bundled recipes of the ablation tables carry the paper's parameter counts (docs/recipes.md): the sum of
# petl_parameters over their methods, at AST-base (paper 004's: with the 44-class head, in millions).
P002_RECIPES = [
    ("p002-t4-lora-q-esc50", 221_184), ("p002-t4-lora-qk-esc50", 221_184), ("p002-t4-lora-qkvo-esc50", 221_184),
    ("p002-t5-pf-mhsa-par-before-x2-esc50", 470_304), ("p002-t5-hou-par-esc50", 497_952),
    ("p002-t6-lora-r12-fsc", 442_368), ("p002-t6-adapter-lora-fsc", 470_160),  # 442K, 470K
    ("p002-t6-adapter-dpt25-fsc", 479_376), ("p002-t6-adapter-dpt14-lora-fsc", 488_592),  # 479K, 488K
    ("p002-t3-ffn-seq-before-gsc", 248_976), ("p002-t7-par-residual-esc50", 248_976),
]


def _recipe_methods(name):
    from surgeon.recipes.load import load_recipe

    return [(m.name, m.options()) for m in load_recipe(name, check_paths=False).methods]


@pytest.mark.parametrize("name, expected", P002_RECIPES, ids=[n for n, _ in P002_RECIPES])
def test_ablation_recipes_have_the_papers_counts(ast_base, name, expected):
    from surgeon.api import inject, strip, surgery

    for method, options in _recipe_methods(name):
        inject(ast_base, method, **options)
    try:
        assert sum(e["petl_parameters"] for e in surgery(ast_base)["methods"]) == expected
    finally:
        strip(ast_base)


@pytest.mark.parametrize("block", ["attn", "ffn"])
@pytest.mark.parametrize("size, paper", [("1m", "1.031M"), ("2m", "2.026M"), ("4m", "4.017M")])
def test_loaa_table1_recipes_equalise_the_columns(ast_base, block, size, paper):
    """Paper 004 Table 1: the four kernels of a row have the same count (the paper's 1.035M row is 1.031M:
    r = 18; no integer r gives 1.035M)."""
    from surgeon.api import inject, strip

    for kernel in ("k11", "f31", "t13", "k33"):
        ((method, options),) = _recipe_methods(f"loaa-imagenet-ast-t1-{block}-{kernel}-{size}-epic")
        inject(ast_base, method, **options)
        try:
            trainable = sum(p.numel() for p in ast_base.parameters() if p.requires_grad)
            assert f"{trainable / 1e6:.3f}M" == paper, kernel
        finally:
            strip(ast_base)
