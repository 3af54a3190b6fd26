"""`petl_parameters` at AST-base (ASTConfig() defaults, random weights) equals every exact count of
petl-facts.md: the fourteen table rows and the further verified counts."""
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
    return transformers.ASTForAudioClassification(transformers.ASTConfig()).eval()


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
