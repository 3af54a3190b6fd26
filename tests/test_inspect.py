"""`surgeon inspect` on tiny models of every family: every JSON field against the config."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from surgeon.tiny import build_tiny, save_tiny


def _float_params(model):
    return sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())


def test_inspect_json_matches_the_config(tiny_dir, family, cli):
    path = tiny_dir(family)
    r = cli("inspect", path, "--json")
    assert r.code == 0, r.err
    doc = r.json()
    model = build_tiny(family)
    cfg = model.config
    assert doc["format"] == "safetensors"
    assert doc["family"] == family
    assert doc["num_layers"] == cfg.num_hidden_layers
    assert doc["hidden_size"] == cfg.hidden_size
    assert doc["num_heads"] == cfg.num_attention_heads
    assert doc["intermediate_size"] == cfg.intermediate_size
    assert doc["num_parameters"] == _float_params(model)
    expected_dtypes = {}
    for t in model.state_dict().values():
        name = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        expected_dtypes[name] = expected_dtypes.get(name, 0) + t.numel()
    assert doc["dtypes"] == expected_dtypes
    assert doc["size_bytes"] == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert doc["surgery"] == []
    assert doc["key_scheme"] == "disk"


def test_layers_are_collapsed(tiny_dir, cli):
    doc = cli("inspect", tiny_dir("bert"), "--json").json()
    rows = {t["name"]: t for t in doc["tensors"]}
    q = rows["encoder.layer.{0..1}.attention.self.query.weight"]
    assert q["count"] == 2 and q["shape"] == [32, 32] and q["dtype"] == "F32"


def test_integer_buffers_are_not_parameters(tmp_path, cli):
    f = tmp_path / "bare.safetensors"
    model = build_tiny("bert")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    save_file(state, f)
    doc = cli("inspect", f, "--json").json()
    assert doc["num_parameters"] == _float_params(model)
    assert doc["dtypes"]["I64"] == 64


@pytest.mark.parametrize("family", ["ast", "hubert", "bert"])
def test_bare_safetensors_with_in_memory_names(tmp_path, cli, family):
    """A state dict saved straight from a transformers-5 model (new names, no config)."""
    model = build_tiny(family)
    f = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f)
    doc = cli("inspect", f, "--json").json()
    assert doc["family"] == family
    # only AST/ViT were renamed in transformers 5; BERT and HuBERT names are the same in both schemes
    assert doc["key_scheme"] == ("memory" if family == "ast" else "disk")
    assert doc["num_layers"] == 2 and doc["hidden_size"] == 32 and doc["intermediate_size"] == 64


def test_sharded_checkpoint(tmp_path, cli):
    model = build_tiny("ast")
    out = tmp_path / "sharded"
    model.save_pretrained(out, max_shard_size="40KB")
    doc = cli("inspect", out, "--json", "--check").json()
    assert doc["format"] == "safetensors-sharded"
    assert len(doc["shards"]) > 1
    assert doc["num_parameters"] == _float_params(model)
    assert any("consistent" in line for line in doc["check"])


def test_human_output_names_family_and_layers(tiny_dir, cli):
    r = cli("inspect", tiny_dir("hubert"))
    assert r.code == 0
    assert "hubert" in r.out and "layers" in r.out and "x2" in r.out


def test_inspect_does_not_import_torch(tiny_dir):
    code = (
        "import sys; from surgeon_cli.main import run\n"
        "try:\n    run(['inspect', sys.argv[1], '--json'])\nexcept SystemExit as e:\n    assert not e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tiny_dir("ast"))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_help_does_not_import_torch():
    code = (
        "import sys; from surgeon_cli.main import run\n"
        "try:\n    run(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_models_lists_aliases(cli):
    r = cli("models", "--json")
    rows = {row["alias"]: row for row in r.json()}
    assert rows["hubert"]["hub_id"] == "facebook/hubert-large-ls960-ft"
    assert rows["bert"]["hub_id"] == "google-bert/bert-large-uncased"
    assert rows["ast"]["hub_id"] == "MIT/ast-finetuned-audioset-10-10-0.4593"
    assert {"bert", "hubert", "ast", "vit", "wav2vec2"} <= set(rows)


def test_alias_resolves_through_the_hf_cache(tmp_path, monkeypatch, cli):
    cache = tmp_path / "hub"
    repo = cache / "models--google-bert--bert-large-uncased"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    save_tiny("bert", repo / "snapshots" / "abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    doc = cli("inspect", "bert", "--json").json()
    assert doc["family"] == "bert" and doc["num_layers"] == 2
    r = cli("inspect", "facebook/hubert-large-ls960-ft", "--json")
    assert r.code == 2 and "not in the local Hugging Face cache" in r.err and len(r.err.strip().splitlines()) == 1


def test_tiny_command_writes_a_loadable_model(tmp_path, cli):
    out = tmp_path / "m"
    assert cli("tiny", "wav2vec2", "--out", out).code == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "wav2vec2"
    r = cli("tiny", "wav2vec2", "--out", out)
    assert r.code == 2 and "--force" in r.err
    assert cli("tiny", "wav2vec2", "--out", out, "--force").code == 0
