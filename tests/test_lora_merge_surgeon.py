"""`surgeon merge-lora` on surgeon's own LoRA format (surgery contract: adapter.safetensors keyed by
in-memory names, surgery.json with the base fingerprint and the LoRA scaling)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from surgeon.io.checkpoint import Checkpoint
from surgeon.surgery_keys import RECORD_KEY

FAMILIES = ("ast", "vit", "bert", "hubert", "wav2vec2")


def cli(*args) -> int:
    from surgeon_cli.main import run

    with pytest.raises(SystemExit) as e:
        run([str(a) for a in args])
    return e.value.code


def make_surgeon_adapter(base_dir, out, *, rank=3, scaling=0.5, targets=("q", "v"), head=True, seed=0):
    """Write a LoRA adapter directory exactly as the surgery contract describes it; returns
    (out, {module path: (A, B)}, {param name: tensor}) with random A and B (B non-zero on purpose)."""
    from surgeon.fingerprint import model_fingerprint
    from surgeon.hf import family_of_model, layer_module_path, load_pretrained
    from surgeon.io.writer import save_state_dict

    model = load_pretrained(base_dir)
    fam = family_of_model(model)
    gen = torch.Generator().manual_seed(seed)
    state, lora, full = {}, {}, {}
    for i in range(model.config.num_hidden_layers):
        for role in targets:
            path = layer_module_path(model, fam, i, role)
            linear = model.get_submodule(path)
            # a trained-looking update (not an exploding one, which would drown fp32 in rounding)
            a = torch.randn(rank, linear.in_features, generator=gen) / linear.in_features**0.5
            b = 0.1 * torch.randn(linear.out_features, rank, generator=gen)
            state[f"{path}.surgeon_lora.lora_A"], state[f"{path}.surgeon_lora.lora_B"] = a, b
            lora[path] = (a, b)
    if head:  # a trained head travels as a full tensor under its in-memory name
        name, p = next((n, p) for n, p in model.named_parameters() if n.split(".")[0] in fam.heads)
        full[name] = torch.randn(p.shape, generator=gen)
        state.update(full)
    record = {
        "format": "surgeon-surgery/1", "surgeon_version": "0.1.0",
        "base": {"ref": str(base_dir), "path": str(base_dir), "fingerprint": model_fingerprint(model),
                 "family": fam.name, "architecture": type(model).__name__},
        "methods": [{"method": "lora", "options": {"rank": rank, "alpha": 8.0, "targets": list(targets), "scaling": scaling},
                     "num_parameters": sum(a.numel() + b.numel() for a, b in lora.values()), "petl_parameters": 0}],
        "key_scheme": "memory",
    }
    out = Path(out)
    out.mkdir(parents=True)
    save_state_dict(out, state, {RECORD_KEY: json.dumps(record)}, filename="adapter.safetensors")
    (out / "surgery.json").write_text(json.dumps(record, indent=2))
    return out, lora, full


def unmerged_model(base_dir, lora, full, scaling):
    """The LoRA model without merging: y = W x + b + scaling * B A x on every adapted Linear."""
    from surgeon.hf import load_pretrained

    model = load_pretrained(base_dir)
    for path, (a, b) in lora.items():
        model.get_submodule(path).register_forward_hook(
            lambda m, inp, out, a=a, b=b: out + scaling * (inp[0] @ a.T) @ b.T)
    with torch.no_grad():
        for name, t in full.items():
            model.get_parameter(name).copy_(t)
    return model


def outputs(model, family):
    from surgeon.merging.verify import probe_input
    from surgeon.anatomy import get_family

    with torch.no_grad():
        return model(**probe_input(model.config, get_family(family), seed=3))[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_equals_unmerged(tiny_dir, tmp_path, family):
    from surgeon.hf import load_pretrained

    base = tiny_dir(family)
    adapter, lora, full = make_surgeon_adapter(base, tmp_path / "adapter", targets=("q", "k", "v", "o"))
    assert cli("merge-lora", base, "--adapter", adapter, "--out", tmp_path / "merged") == 0
    merged = load_pretrained(tmp_path / "merged")
    expected = outputs(unmerged_model(base, lora, full, 0.5), family)
    torch.testing.assert_close(outputs(merged, family), expected, atol=1e-5, rtol=0)
    ckpt = Checkpoint.open(tmp_path / "merged")
    assert not any("surgeon_" in k for k in ckpt.keys()) and RECORD_KEY not in ckpt.metadata
    assert list(ckpt.keys()) == list(Checkpoint.open(base).keys())


def test_fold_formula_per_tensor_and_untouched_tensors(tiny_dir, tmp_path):
    base = Checkpoint.open(tiny_dir("ast"))
    adapter, lora, _ = make_surgeon_adapter(base.path, tmp_path / "adapter", head=False, scaling=0.25)
    assert cli("merge-lora", base.path, "--adapter", adapter, "--out", tmp_path / "merged") == 0
    out = Checkpoint.open(tmp_path / "merged")
    folded = set()
    for path, (a, b) in lora.items():  # in-memory path -> the classic key on disk
        key = base.family.translate(path + ".weight", "memory", "disk")
        torch.testing.assert_close(out.get(key), base.get(key) + 0.25 * b @ a, atol=1e-6, rtol=0)
        folded.add(key)
    for k in base.keys():
        if k not in folded:
            assert torch.equal(out.get(k), base.get(k)), k
    record = json.loads((tmp_path / "merged" / "merge.json").read_text())
    assert record["method"] == "lora" and set(record["folded"]) == folded


def test_verify_prints_max_difference(tiny_dir, tmp_path, capsys):
    base = tiny_dir("hubert")
    adapter, _, _ = make_surgeon_adapter(base, tmp_path / "adapter")
    assert cli("merge-lora", base, "--adapter", adapter, "--out", tmp_path / "merged", "--verify", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert 0 <= doc["max_difference"] < 1e-5 and doc["lora_effect"] > 1e-4  # a check of a real change


def test_verify_says_an_untrained_adapter_shows_nothing(tiny_dir, tmp_path, capsys):
    """Issue 15 item 10: with every B zero the merged model is the base, and --verify says so."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    base = tiny_dir("hubert")
    adapter, _, _ = make_surgeon_adapter(base, tmp_path / "adapter", head=False)
    f = next(adapter.glob("*.safetensors"))
    with safe_open(str(f), "pt") as g:
        meta = g.metadata()
    tensors = {k: (torch.zeros_like(v) if "lora_B" in k or k.endswith(".B") else v) for k, v in load_file(f).items()}
    save_file(tensors, str(f), metadata=meta)
    assert cli("merge-lora", base, "--adapter", adapter, "--out", tmp_path / "merged", "--verify") == 0
    out = capsys.readouterr().out
    assert "changes nothing" in out and "shows nothing" in out


def test_lora_inside_a_full_model_directory(tiny_dir, tmp_path):
    """`inject --full` output: the LoRA tensors live in the model checkpoint itself (any key scheme)."""
    from surgeon.io.writer import save_state_dict

    base = Checkpoint.open(tiny_dir("vit"))
    adapter, lora, _ = make_surgeon_adapter(base.path, tmp_path / "adapter", head=False)
    record = json.loads((adapter / "surgery.json").read_text())
    state = base.state_dict()
    for path, (a, b) in lora.items():  # stored under the classic names, as save_pretrained would
        disk = base.family.translate(path + ".weight", "memory", "disk").removesuffix(".weight")
        state[f"{disk}.surgeon_lora.lora_A"], state[f"{disk}.surgeon_lora.lora_B"] = a, b
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_bytes((base.path / "config.json").read_bytes())
    save_state_dict(full, state, {RECORD_KEY: json.dumps(record)})
    (full / "surgery.json").write_text(json.dumps(record))
    assert cli("merge-lora", full, "--out", tmp_path / "m1") == 0
    assert cli("merge-lora", base.path, "--adapter", adapter, "--out", tmp_path / "m2") == 0
    m1, m2 = Checkpoint.open(tmp_path / "m1"), Checkpoint.open(tmp_path / "m2")
    assert list(m1.keys()) == list(m2.keys()) == list(base.keys())
    assert all(torch.equal(m1.get(k), m2.get(k)) for k in base.keys())
    assert not (tmp_path / "m1" / "surgery.json").exists()


def test_adapter_for_another_base_is_refused(tiny_dir, tmp_path, capsys):
    adapter, _, _ = make_surgeon_adapter(tiny_dir("hubert"), tmp_path / "adapter")
    other = tiny_dir("hubert", seed=1)  # same architecture, other weights: the fingerprint tells
    assert cli("merge-lora", other, "--adapter", adapter, "--out", tmp_path / "merged") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different model" in err and not (tmp_path / "merged").exists()
    wider = tiny_dir("hubert", hidden_size=48)
    assert cli("merge-lora", wider, "--adapter", adapter, "--out", tmp_path / "merged") == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "merged").exists()


def test_non_lora_modules_are_refused(tiny_dir, tmp_path, capsys):
    from surgeon.io.writer import save_state_dict

    adapter, _, _ = make_surgeon_adapter(tiny_dir("hubert"), tmp_path / "adapter")
    state = Checkpoint.open(adapter / "adapter.safetensors").state_dict()
    state["hubert.encoder.layers.0.surgeon_bottleneck.down.weight"] = torch.zeros(4, 32)
    (adapter / "adapter.safetensors").unlink()
    save_state_dict(adapter, state, filename="adapter.safetensors")
    assert cli("merge-lora", tiny_dir("hubert"), "--adapter", adapter, "--out", tmp_path / "merged") == 2
    assert "bottleneck" in capsys.readouterr().err and not (tmp_path / "merged").exists()


def test_verify_without_a_model_directory_is_refused_before_writing(tiny_dir, tmp_path, capsys):
    adapter, _, _ = make_surgeon_adapter(tiny_dir("hubert"), tmp_path / "adapter")
    weights = Path(tiny_dir("hubert")) / "model.safetensors"
    assert cli("merge-lora", weights, "--adapter", adapter, "--out", tmp_path / "merged", "--verify") == 2
    assert "--verify" in capsys.readouterr().err and not (tmp_path / "merged").exists()


def test_model_without_lora_and_no_adapter_is_refused(tiny_dir, tmp_path, capsys):
    assert cli("merge-lora", tiny_dir("hubert"), "--out", tmp_path / "merged") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "carries no LoRA" in err and "--adapter" in err
    assert not (tmp_path / "merged").exists()


def test_quantised_base_is_refused(tiny_dir, tmp_path, capsys):
    base = Checkpoint.open(tiny_dir("hubert"))
    adapter, _, _ = make_surgeon_adapter(base.path, tmp_path / "adapter")
    quant = tmp_path / "quant"
    quant.mkdir()
    (quant / "model.safetensors").write_bytes((base.path / "model.safetensors").read_bytes())
    config = json.loads((base.path / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (quant / "config.json").write_text(json.dumps(config))
    assert cli("merge-lora", quant, "--adapter", adapter, "--out", tmp_path / "merged") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quantised" in err and not (tmp_path / "merged").exists()


def test_dry_run_writes_nothing(tiny_dir, tmp_path, capsys):
    adapter, lora, _ = make_surgeon_adapter(tiny_dir("bert"), tmp_path / "adapter")
    assert cli("merge-lora", tiny_dir("bert"), "--adapter", adapter, "--dry-run", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["folded"]) == len(lora) and len(doc["replaced"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


@pytest.mark.parametrize("family,full", [("hubert", False), ("ast", False), ("ast", True)])
def test_through_surgeon_inject(tiny_dir, tmp_path, family, full):
    """The real path: surgeon.api.inject(model, "lora", ...), saved adapter-only or as a full model."""
    api = pytest.importorskip("surgeon.api")
    from surgeon.hf import load_pretrained

    base = tiny_dir(family)
    model = load_pretrained(base)
    api.inject(model, "lora", rank=4, targets=["q", "k", "v"])
    with torch.no_grad():  # B starts at zero; give it values so the fold is visible
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(std=0.1)
    api.save_surgery(model, tmp_path / "adapter", full=full)
    args = [tmp_path / "adapter"] if full else [base, "--adapter", tmp_path / "adapter"]
    assert cli("merge-lora", *args, "--out", tmp_path / "merged") == 0
    merged = load_pretrained(tmp_path / "merged")
    assert not any("surgeon" in k for k in Checkpoint.open(tmp_path / "merged").keys())
    torch.testing.assert_close(outputs(merged, family), outputs(model, family), atol=1e-5, rtol=0)
