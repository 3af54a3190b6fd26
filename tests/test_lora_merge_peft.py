"""PEFT interoperability: PEFT adapters fold to exactly what peft's own merge_and_unload gives, and
`surgeon export lora --format peft` writes a directory that PeftModel.from_pretrained loads."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from surgeon.io.checkpoint import Checkpoint

peft = pytest.importorskip("peft")

from test_lora_merge_surgeon import cli, make_surgeon_adapter, outputs, unmerged_model  # noqa: E402


def name(family, role):
    """The in-memory module name of a role (what PEFT users put in target_modules)."""
    from surgeon.anatomy import get_family

    return get_family(family).memory.roles[role].rsplit(".", 1)[-1]


def layer_path(family, i, role):
    from surgeon.anatomy import get_family

    return get_family(family).memory.role_path(i, role)


CONFIGS = {
    "plain": lambda f: dict(r=4, lora_alpha=8, target_modules=[name(f, "q"), name(f, "v")]),
    "patterns": lambda f: dict(r=4, lora_alpha=8, target_modules=[name(f, "q"), name(f, "k"), name(f, "v")],
                               rank_pattern={layer_path(f, 1, "q"): 2}, alpha_pattern={name(f, "v"): 3}),
    "rslora": lambda f: dict(r=4, lora_alpha=16, target_modules=[name(f, "q"), name(f, "v")], use_rslora=True),
    "fan_in_fan_out": lambda f: dict(r=2, lora_alpha=4, target_modules=[name(f, "k")], fan_in_fan_out=True),
}
HEADS = {"hubert": ["lm_head"], "ast": ["classifier"], "bert": None}


def make_peft_adapter(base_dir, out, family, seed=0, **config):
    from surgeon.hf import load_pretrained

    model = load_pretrained(base_dir)
    config.setdefault("modules_to_save", HEADS[family])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(model, peft.LoraConfig(**config))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    pm.save_pretrained(out)
    return out


def peft_merged_state(base_dir, adapter_dir):
    from surgeon.hf import load_pretrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.PeftModel.from_pretrained(load_pretrained(base_dir), adapter_dir).merge_and_unload()
    return model.state_dict()


@pytest.mark.parametrize("family", ["hubert", "ast", "bert"])
@pytest.mark.parametrize("variant", list(CONFIGS))
def test_matches_peft_merge_and_unload(tiny_dir, tmp_path, family, variant):
    from surgeon.hf import load_pretrained

    base = tiny_dir(family)
    adapter = make_peft_adapter(base, tmp_path / "peft", family, **CONFIGS[variant](family))
    assert cli("merge-lora", base, "--adapter", adapter, "--out", tmp_path / "merged") == 0
    ours = load_pretrained(tmp_path / "merged").state_dict()
    theirs = peft_merged_state(base, adapter)
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        torch.testing.assert_close(ours[k], v, atol=1e-6, rtol=0, msg=k)


def test_dora_is_refused(tiny_dir, tmp_path, capsys):
    adapter = make_peft_adapter(tiny_dir("hubert"), tmp_path / "dora", "hubert", r=2, target_modules=["q_proj"], use_dora=True)
    assert cli("merge-lora", tiny_dir("hubert"), "--adapter", adapter, "--out", tmp_path / "merged") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DoRA" in err and not (tmp_path / "merged").exists()


def test_peft_adapter_for_another_base_is_refused(tiny_dir, tmp_path, capsys):
    adapter = make_peft_adapter(tiny_dir("hubert"), tmp_path / "peft", "hubert", **CONFIGS["plain"]("hubert"))
    assert cli("merge-lora", tiny_dir("hubert", hidden_size=48), "--adapter", adapter, "--out", tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another model" in err and not (tmp_path / "m").exists()
    assert cli("merge-lora", tiny_dir("bert"), "--adapter", adapter, "--out", tmp_path / "m") == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "m").exists()


@pytest.mark.parametrize("family", ["ast", "hubert"])
def test_export_round_trips_through_peft(tiny_dir, tmp_path, family):
    from surgeon.hf import load_pretrained

    base = tiny_dir(family)
    adapter, lora, full = make_surgeon_adapter(base, tmp_path / "adapter", rank=3, scaling=0.0625, targets=("q", "v", "o"))
    assert cli("export", "lora", adapter, "--format", "peft", "--out", tmp_path / "peft") == 0
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["modules_to_save"] == [next(iter(full)).rsplit(".", 1)[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.PeftModel.from_pretrained(load_pretrained(base), tmp_path / "peft")
    expected = outputs(unmerged_model(base, lora, full, 0.0625), family)
    torch.testing.assert_close(outputs(pm, family), expected, atol=1e-5, rtol=0)
    # and the exported adapter folds to what surgeon's own adapter folds to
    assert cli("merge-lora", base, "--adapter", adapter, "--out", tmp_path / "m1") == 0
    assert cli("merge-lora", base, "--adapter", tmp_path / "peft", "--out", tmp_path / "m2") == 0
    m1, m2 = Checkpoint.open(tmp_path / "m1"), Checkpoint.open(tmp_path / "m2")
    for k in m1.keys():
        torch.testing.assert_close(m1.get(k), m2.get(k), atol=1e-6, rtol=0, msg=k)


def test_export_refuses_existing_output_and_unknown_format(tiny_dir, tmp_path, capsys):
    adapter, _, _ = make_surgeon_adapter(tiny_dir("bert"), tmp_path / "adapter", head=False)
    assert cli("export", "lora", adapter, "--format", "onnx", "--out", tmp_path / "x") == 2
    assert "--format" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (tmp_path / "x").mkdir()
    assert cli("export", "lora", adapter, "--out", tmp_path / "x") == 2
    assert "--force" in capsys.readouterr().err
