"""Learnable-MAM (paper 003 eq. 3) on a tiny BERT source and a tiny HuBERT-for-CTC target."""
from __future__ import annotations

import pytest
import torch

from surgeon.errors import SurgeonError

ROLES = {"q": "q_proj", "k": "k_proj", "v": "v_proj"}
BERT = {"q": "query", "k": "key", "v": "value"}


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    from surgeon.tiny import save_tiny

    root = tmp_path_factory.mktemp("lmam")
    return {"source": save_tiny("bert", root / "bert", num_hidden_layers=3),
            "target": save_tiny("hubert", root / "hubert", num_hidden_layers=3)}


def load_target(refs):
    from surgeon.hf import load_pretrained

    return load_pretrained(refs["target"])


def source_tensor(refs, i, role, leaf):
    from surgeon.io.checkpoint import Checkpoint

    ckpt = Checkpoint.open(refs["source"])
    return ckpt.get(f"encoder.layer.{i}.attention.self.{BERT[role]}.{leaf}")


def attn(model, i, role):
    return getattr(model.hubert.encoder.layers[i].attention, ROLES[role])


def probe():
    torch.manual_seed(0)
    return torch.randn(2, 1600)


def test_init_equals_static_merge(refs, tmp_path):
    from surgeon.hf import load_pretrained
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.merging.mam import run_merge
    from surgeon.merging.plan import build_plan, open_source
    from surgeon.speech import learnable_mam as lmam

    plain = load_target(refs)
    model = load_target(refs)
    lmam.apply(model, refs["source"], layers=[0, 2], init_lam=0.1)
    lam = torch.tensor(0.1)
    for i in (0, 2):
        for role in ROLES:
            for leaf in ("weight", "bias"):
                wt, ws = getattr(attn(plain, i, role), leaf), source_tensor(refs, i, role, leaf)
                merged = getattr(attn(model, i, role), leaf)
                assert torch.equal(merged, wt + lam * (ws - wt))  # what the static merge computes, unfused
                assert torch.allclose(merged, lam * ws + (1 - lam) * wt, rtol=0, atol=1e-7)  # eq. 3
    for role in ROLES:  # layer 1 is not merged
        assert torch.equal(attn(model, 1, role).weight, attn(plain, 1, role).weight)

    # the same model as `surgeon merge --lam 0.1 --layers 0,2`
    tgt = Checkpoint.open(refs["target"])
    run_merge(build_plan(tgt, open_source(str(refs["source"]), tgt), "0.1", layers="0,2"), tmp_path / "merged")
    merged = load_pretrained(tmp_path / "merged")
    for name, p in merged.state_dict().items():
        if ".attention." in name and name.split(".")[-2] in ROLES.values():
            assert torch.allclose(_param(model, name), p, atol=1e-6), name
    with torch.no_grad():
        assert torch.allclose(model(probe()).logits, merged(probe()).logits, atol=1e-5)


def _param(model, name):
    module, _, leaf = name.rpartition(".")
    return getattr(model.get_submodule(module), leaf)


def test_gradients_reach_lam_and_target_not_source(refs):
    from surgeon.speech import learnable_mam as lmam

    model = load_target(refs).train()
    gates = lmam.apply(model, refs["source"], init_lam=0.3)
    model(probe()).logits.pow(2).mean().backward()
    for i, gate in gates.items():
        assert gate.raw.grad is not None and gate.raw.grad.abs() > 0
        for role in ROLES:
            p = attn(model, i, role).parametrizations.weight
            assert p.original.requires_grad and p.original.grad.abs().sum() > 0
            src = p[0].source
            assert not src.requires_grad and src.grad is None
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith(".source") for n in names)
    assert sum(n.endswith("surgeon_lmam.raw") for n in names) == 3  # one lam per layer, shared by q/k/v


def test_frozen_target_trains_lam_only(refs):
    from surgeon.speech import learnable_mam as lmam

    model = load_target(refs)
    lmam.apply(model, refs["source"], layers=[1], init_lam=0.5, train_target=False)
    assert not attn(model, 1, "q").parametrizations.weight.original.requires_grad
    assert lmam.lam_parameters(model)[0].requires_grad


@pytest.mark.parametrize("init", [0.0, 1.0, 0.5, 0.1])
def test_gate_starts_at_init_lam_exactly_with_a_live_gradient(init):
    from surgeon.speech.learnable_mam import LamGate

    gate = LamGate(init)
    lam = gate.lam()
    assert float(lam) == float(torch.tensor(init))  # float32 init_lam, bit for bit
    lam.backward()
    assert gate.raw.grad > 1e-4  # the clamp gave 0 at 0 and 1 (issue 13 item 1)


def test_gate_stays_in_unit_interval_and_gradient_survives_overshoot():
    from surgeon.speech.learnable_mam import LamGate

    for init in (0.0, 1.0, 0.3):
        gate = LamGate(init)
        for raw in (-40.0, -8.0, -1.0, 0.0, 1.0, 8.0, 40.0):
            with torch.no_grad():
                gate.raw.fill_(raw)
            gate.raw.grad = None
            lam = gate.lam()
            lam.backward()
            assert 0.0 <= float(lam) <= 1.0
            if abs(raw) < 20:
                assert gate.raw.grad > 0  # also where the clamp trims (lam exactly 0 or 1)


def _fit(refs, init, goal, steps=150):
    """Learnable-MAM on layer 1, target frozen, fitted to the q/k/v weights of the static merge at `goal`
    (a loss through the parametrisation that wants lam at `goal`; cheaper than the model's outputs)."""
    from surgeon.speech import learnable_mam as lmam
    from surgeon.speech.recipe_merge import static_merge

    reference = load_target(refs)
    static_merge(reference, refs["source"], layers=[1], lam=goal)
    want = [attn(reference, 1, r).weight.detach() for r in ROLES]
    model = load_target(refs)
    lmam.apply(model, refs["source"], layers=[1], init_lam=init, train_target=False)
    opt = torch.optim.Adam(lmam.lam_parameters(model), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        sum(torch.nn.functional.mse_loss(attn(model, 1, r).weight, w) for r, w in zip(ROLES, want)).backward()
        opt.step()
    return lmam.lams(model)[1]


@pytest.mark.parametrize("init, goal", [(0.0, 0.6), (1.0, 0.4), (0.5, 0.15), (0.5, 1.0), (0.5, 0.0)])
def test_a_loss_that_wants_lam_elsewhere_moves_it_there(refs, init, goal):
    lam = _fit(refs, init, goal)
    assert 0.0 <= lam <= 1.0
    assert abs(lam - goal) < 0.05, (init, goal, lam)  # the ends are approached as a sigmoid approaches 0 and 1


def test_lam_gets_no_weight_decay(refs):
    from surgeon.api import parameter_groups
    from surgeon.speech import learnable_mam as lmam
    from surgeon.train.optim import build_optimizer, no_decay_parameters

    model = load_target(refs)
    lmam.apply(model, refs["source"], layers=[0, 2], init_lam=0.2)
    raws = lmam.lam_parameters(model)
    assert {id(p) for p in no_decay_parameters(model)} == {id(p) for p in raws}
    opt = build_optimizer(parameter_groups(model), {"method": 1e-2, "backbone": 1e-5, "head": 1e-5},
                          weight_decay=0.5, no_decay=no_decay_parameters(model))
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["method.no_decay"]["weight_decay"] == 0.0 and groups["method.no_decay"]["lr"] == 1e-2
    assert {id(p) for p in groups["method.no_decay"]["params"]} == {id(p) for p in raws}
    assert groups["backbone"]["weight_decay"] == 0.5
    assert not any(id(p) in {id(r) for r in raws} for name, g in groups.items() if name != "method.no_decay"
                   for p in g["params"])
    for p in model.parameters():  # a step with zero gradients: only decay could move a parameter
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    before = [float(r) for r in raws]
    opt.step()
    assert [float(r) for r in raws] == before
    assert lmam.lams(model) == {0: float(torch.tensor(0.2)), 2: float(torch.tensor(0.2))}


def test_bake_writes_learned_interpolation_and_loads_with_transformers(refs, tmp_path):
    from transformers import HubertForCTC

    from surgeon.speech import learnable_mam as lmam

    model = load_target(refs).train()
    lmam.apply(model, refs["source"], layers=[0, 1], init_lam=0.2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        model(probe()).logits.pow(2).mean().backward()
        opt.step()
    learned = lmam.lams(model)
    assert all(abs(v - 0.2) > 1e-4 for v in learned.values())  # lam moved
    targets = {(i, r, leaf): getattr(attn(model, i, r).parametrizations, leaf).original.detach().clone()
               for i in (0, 1) for r in ROLES for leaf in ("weight", "bias")}
    model.eval()
    with torch.no_grad():
        before = model(probe()).logits
    assert lmam.bake(model) == learned
    for (i, r, leaf), wt in targets.items():
        lam = torch.tensor(learned[i])
        expected = lam * source_tensor(refs, i, r, leaf) + (1 - lam) * wt
        assert torch.allclose(getattr(attn(model, i, r), leaf), expected, atol=1e-7)
    plain_keys = set(load_target(refs).state_dict())
    assert set(model.state_dict()) == plain_keys  # no extra parameters or buffers left
    assert not lmam.gates(model)
    model.save_pretrained(tmp_path / "baked")
    reloaded = HubertForCTC.from_pretrained(tmp_path / "baked").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(probe()).logits, before, atol=1e-5)


def test_bad_requests(refs, tiny_dir):
    from surgeon.speech import learnable_mam as lmam

    with pytest.raises(SurgeonError, match="layers of width"):
        lmam.apply(load_target(refs), tiny_dir("bert"), init_lam=0.1)  # 2 layers vs 3
    with pytest.raises(SurgeonError, match="out of range"):
        lmam.apply(load_target(refs), refs["source"], layers=[5])
    with pytest.raises(SurgeonError, match="outside"):
        lmam.apply(load_target(refs), refs["source"], init_lam=1.5)
    with pytest.raises(SurgeonError, match="values for"):
        lmam.apply(load_target(refs), refs["source"], init_lam=[0.1, 0.2])


@pytest.mark.parametrize("lam", [0.25, 0.0, 1.0, 0.1])
def test_static_recipe_merge_equals_surgeon_merge_and_lmam_at_init(refs, tmp_path, lam):
    from surgeon.hf import load_pretrained
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.merging.mam import run_merge
    from surgeon.merging.plan import build_plan, open_source
    from surgeon.speech.recipe_merge import static_merge

    model = load_target(refs)
    assert static_merge(model, refs["source"], layers=[1, 2], lam=lam) == [1, 2]
    tgt = Checkpoint.open(refs["target"])
    run_merge(build_plan(tgt, open_source(str(refs["source"]), tgt), str(lam), layers="1,2"), tmp_path / "merged")
    merged = load_pretrained(tmp_path / "merged").state_dict()
    for name, value in model.state_dict().items():
        assert torch.allclose(value, merged[name], rtol=0, atol=1e-6), name
    # Learnable-MAM at init_lam computes the very same weights
    from surgeon.speech import learnable_mam as lmam

    learnable = load_target(refs)
    lmam.apply(learnable, refs["source"], layers=[1, 2], init_lam=lam)
    for i in (1, 2):
        for role in ROLES:
            assert torch.equal(attn(learnable, i, role).weight, attn(model, i, role).weight)
            assert torch.equal(attn(learnable, i, role).bias, attn(model, i, role).bias)
    with torch.no_grad():  # so the whole model at initialisation is the static merge, bit for bit
        assert torch.equal(learnable.eval()(probe()).logits, model.eval()(probe()).logits)


def test_bad_request_leaves_model_untouched(refs):
    from surgeon.speech import learnable_mam as lmam

    model = load_target(refs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SurgeonError, match="outside"):
        lmam.apply(model, refs["source"], init_lam=[0.1, 0.2, 1.5])
    assert not lmam.gates(model) and set(model.state_dict()) == set(before)
    with pytest.raises(SurgeonError, match="out of range"):
        lmam.apply(model, refs["source"], layers=[0, 7])
    assert not lmam.gates(model) and set(model.state_dict()) == set(before)


# -- the recipe [merge] table: per-layer init_lam, layers_from, bias ------------------------------

def merge_section(**keys):
    from surgeon.recipes.schema import MergeSection

    return MergeSection(**keys)


@pytest.mark.parametrize("learnable", [False, True])
def test_recipe_per_layer_init_lam_reaches_the_model(refs, learnable):
    from surgeon.speech import learnable_mam as lmam
    from surgeon.speech.recipe_merge import apply

    plain, model = load_target(refs), load_target(refs)
    # listed out of order: the values follow the order of `layers`
    apply(model, merge_section(source=str(refs["source"]), learnable=learnable, layers=[2, 0], init_lam=[0.75, 0.25]))
    want = {0: 0.25, 2: 0.75}
    if learnable:
        assert lmam.lams(model) == want
    for i in range(3):
        for role in ROLES:
            for leaf in ("weight", "bias"):
                wt, got = getattr(attn(plain, i, role), leaf), getattr(attn(model, i, role), leaf)
                if i not in want:
                    assert torch.equal(got, wt)
                    continue
                ws = source_tensor(refs, i, role, leaf)
                assert torch.allclose(got, want[i] * ws + (1 - want[i]) * wt, rtol=0, atol=1e-6), (i, role, leaf)


@pytest.mark.parametrize("learnable", [False, True])
def test_recipe_bias_false_leaves_biases_untouched(refs, learnable):
    from surgeon.speech.recipe_merge import apply

    plain, model = load_target(refs), load_target(refs)
    apply(model, merge_section(source=str(refs["source"]), learnable=learnable, init_lam=0.5, bias=False))
    for i in range(3):
        for role in ROLES:
            assert torch.equal(attn(model, i, role).bias, attn(plain, i, role).bias)
            assert not torch.equal(attn(model, i, role).weight, attn(plain, i, role).weight)


def test_recipe_layers_from_selection_file(refs, tmp_path):
    import json

    from surgeon.recipes.load import load_recipe
    from surgeon.speech.recipe_merge import apply, layer_plan

    (tmp_path / "sel").mkdir()
    (tmp_path / "sel" / "selection.json").write_text(json.dumps({"layers": [2, 1], "metric": "swd"}))
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(merge=f'source = "{refs["source"]}"\nlayers_from = "sel/selection.json"\n'
                                          'init_lam = [0.2, 0.6]'))
    section = load_recipe(recipe, check_paths=False).merge
    assert section.layers_from == str(tmp_path / "sel" / "selection.json")  # against the recipe's folder
    # the run directory's dump (defaults spelt out, layers = "all" among them) loads again
    from surgeon.recipes.load import dump_recipe

    (tmp_path / "dumped.toml").write_text(dump_recipe(load_recipe(recipe, check_paths=False)))
    assert load_recipe(tmp_path / "dumped.toml", check_paths=False).merge == section
    assert layer_plan(section, 3) == ([1, 2], {1: 0.2, 2: 0.6})  # ascending layer order
    plain, model = load_target(refs), load_target(refs)
    apply(model, section)
    assert torch.equal(attn(model, 0, "q").weight, attn(plain, 0, "q").weight)
    for i, lam in ((1, 0.2), (2, 0.6)):
        ws, wt = source_tensor(refs, i, "q", "weight"), attn(plain, i, "q").weight
        assert torch.allclose(attn(model, i, "q").weight, lam * ws + (1 - lam) * wt, rtol=0, atol=1e-6)
    # three values for the file's two layers: an error naming the key, before the model is touched
    section = section.model_copy(update={"init_lam": [0.1, 0.2, 0.3]})
    with pytest.raises(SurgeonError, match=r"merge.init_lam: 3 values for 2 merged layers"):
        apply(load_target(refs), section)


RECIPE = """
[model]
tiny = "hubert"
task = "ctc"
[method]
name = "full"
[merge]
{merge}
[data]
format = "transcripts"
root = "data"
[train]
epochs = 1
batch_size = 2
"""


@pytest.mark.parametrize("merge, problem", [
    ('source = "bert"\nlayers = [0, 1]\ninit_lam = [0.1, 0.2, 0.3]', "merge.init_lam: 3 values for 2 layers"),
    ('source = "bert"\ninit_lam = []', "merge.init_lam: "),
    ('source = "bert"\ninit_lam = [0.1, 1.5]', "merge.init_lam: 1.5 is outside [0, 1]"),
    ('source = "bert"\nlayers = [0, 0]\ninit_lam = [0.1, 0.2]', "merge.layers: a layer is listed twice"),
    ('source = "bert"\nlayers = [0]\nlayers_from = "s.json"', "merge.layers_from: give either layers or layers_from"),
    ('source = "bert"\nbias = "no"', "merge.bias: "),
])
def test_recipe_merge_schema_errors(tmp_path, merge, problem):
    from surgeon.recipes.load import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(merge=merge))
    with pytest.raises(SurgeonError) as e:
        load_recipe(recipe, check_paths=False)
    assert problem in str(e.value) and "\n" not in str(e.value)
