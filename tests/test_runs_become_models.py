"""A trained run becomes a model: its base is found again even when it was built on the spot (a
`tiny` recipe: rebuilt from the record, bit for bit), so surgeon.load, strip and eval --model work
on it; `surgeon export --as model` gives a from_pretrained directory with the run's logits,
`--as peft` a PEFT adapter, `--as surgery` an adapter directory; every written model directory
carries a README.md card."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# LoRA and a trained head on a tiny AST whose position table is resized (64 frames, config 100)
RECIPE = """
[model]
tiny = "ast"
config = { max_length = 100 }

[method]
name = "lora"
rank = 4
targets = ["q", "v"]

[data]
format = "synthetic"
options = { num_classes = 3, per_class = 8, seconds = 1.0, seed = 0 }
max_frames = 64

[train]
epochs = 1
batch_size = 8
lr = 1e-2
"""


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    from surgeon_cli.main import run

    tmp = tmp_path_factory.mktemp("runs-models")
    mp = pytest.MonkeyPatch()
    mp.setenv("SURGEON_CACHE", str(tmp / "cache"))
    recipe = tmp / "lora.toml"
    recipe.write_text(RECIPE)
    with pytest.raises(SystemExit) as e:
        run(["train", str(recipe), "--out", str(tmp / "run")])
    assert e.value.code == 0
    yield recipe, tmp / "run"
    mp.undo()


def probe(frames: int = 64) -> torch.Tensor:
    return torch.randn(2, frames, 128, generator=torch.Generator().manual_seed(0))


def test_a_built_base_is_rebuilt_bit_for_bit():
    from surgeon import built

    for record in (built.tiny_record("ast", "ASTForAudioClassification", {"max_length": 100, "num_labels": 3}),
                   built.imagenet_vit_record(built.tiny_record("vit", "ViTModel", {}),
                                             {"frequency_stride": 16, "time_stride": 16})):
        a = built.build(record).state_dict()
        torch.manual_seed(123)  # whatever the global random state, the same model
        torch.rand(7)
        b = built.build(record).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_run_records_how_its_base_was_built_and_loads(lora_run):
    import surgeon

    _, run = lora_run
    checkpoint = run / "checkpoints" / "official-seed0"
    record = json.loads((checkpoint / "surgery.json").read_text())
    assert record["base"]["build"] == {"kind": "tiny", "family": "ast", "model_class": "ASTForAudioClassification",
                                       "config": {"max_length": 100}, "seed": 0}
    model = surgeon.load(checkpoint)
    assert model.config.max_length == 64 and model.config.num_labels == 3  # the resized table came back
    again = surgeon.load(checkpoint)
    assert torch.equal(model(probe()).logits, again(probe()).logits)


def test_eval_model_and_strip_work_on_a_run_checkpoint(lora_run, cli, tmp_path):
    recipe, run = lora_run
    checkpoint = run / "checkpoints" / "official-seed0"
    assert cli("eval", recipe, "--model", checkpoint, "--out", tmp_path / "m.json").code == 0
    assert cli("eval", recipe, "--run", run, "--out", tmp_path / "r.json").code == 0
    trained = json.loads((run / "results.json").read_text())["cells"][0]["test"]
    for name in ("m.json", "r.json"):
        assert json.loads((tmp_path / name).read_text())["cells"][0]["test"] == trained
    assert cli("strip", checkpoint, "--out", tmp_path / "base").code == 0
    import transformers

    base = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "base")
    assert base.config.max_length == 100 and base.config.num_labels == 5  # the tiny model as it was built
    assert (tmp_path / "base" / "README.md").is_file()


def test_export_as_model_loads_with_from_pretrained_and_gives_the_runs_logits(lora_run, cli, tmp_path):
    import transformers

    import surgeon

    _, run = lora_run
    r = cli("export", run, "--out", tmp_path / "model", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["as"] == "model" and doc["cell"] == "official-seed0" and len(doc["folded"]) == 4  # q, v x 2 layers
    exported = transformers.AutoModelForAudioClassification.from_pretrained(tmp_path / "model").eval()
    assert not any("surgeon" in k for k in exported.state_dict())
    trained = surgeon.load(run / "checkpoints" / "official-seed0")
    x = probe()
    torch.testing.assert_close(exported(x).logits, trained(x).logits, atol=1e-5, rtol=0)
    record = json.loads((tmp_path / "model" / "export.json").read_text())
    assert record["format"] == "surgeon-export/1" and record["metrics"]["test_accuracy"] >= 0
    card = (tmp_path / "model" / "README.md").read_text()
    assert "from_pretrained" in card and "test_accuracy" in card and "lora" in card
    assert f"surgeon export {run} --out {tmp_path / 'model'} --json" in card  # the command that made it


def test_export_as_peft_matches_the_run(lora_run, cli, tmp_path):
    import transformers
    from peft import PeftModel

    import surgeon

    _, run = lora_run
    assert cli("export", run / "checkpoints" / "official-seed0", "--as", "peft", "--out", tmp_path / "peft").code == 0
    assert cli("strip", run / "checkpoints" / "official-seed0", "--out", tmp_path / "base").code == 0
    base = transformers.ASTForAudioClassification.from_pretrained(
        tmp_path / "base", num_labels=3, max_length=64, ignore_mismatched_sizes=True)
    peft = PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    trained = surgeon.load(run / "checkpoints" / "official-seed0")
    torch.testing.assert_close(peft(probe()).logits, trained(probe()).logits, atol=1e-6, rtol=0)
    assert "PeftModel.from_pretrained" in (tmp_path / "peft" / "README.md").read_text()


def test_export_as_surgery_and_the_run_checkpoint_cards(lora_run, cli, tmp_path):
    import surgeon

    _, run = lora_run
    checkpoint = run / "checkpoints" / "official-seed0"
    card = (checkpoint / "README.md").read_text()
    assert "surgeon train" in card and "valid_accuracy" in card and "surgeon.load" in card
    assert cli("export", run, "--as", "surgery", "--out", tmp_path / "s").code == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["README.md", "adapter.safetensors", "surgery.json"]
    assert torch.equal(surgeon.load(tmp_path / "s")(probe()).logits, surgeon.load(checkpoint)(probe()).logits)


@pytest.fixture
def trained_surgery(tiny_dir, tmp_path):
    """save_surgery(name, perturb): a surgery on a saved tiny AST with its trainable tensors moved off their
    initial values, as training would."""
    import surgeon
    from surgeon.api import save_surgery

    def make(method: str, **options):
        model = surgeon.load(tiny_dir("ast", max_length=100))
        surgeon.inject(model, method, **options)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        save_surgery(model, tmp_path / method)
        return tmp_path / method, model

    return make


@pytest.mark.parametrize("method", ["bitfit", "full", "linear"])
def test_export_writes_back_what_bitfit_full_and_linear_trained(trained_surgery, cli, tmp_path, method):
    import transformers

    folder, model = trained_surgery(method)
    assert cli("export", folder, "--out", tmp_path / "out").code == 0
    exported = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "out").eval()
    x = probe(100)
    assert torch.equal(exported(x).logits, model.eval()(x).logits)


def test_methods_that_add_modules_point_to_surgery(trained_surgery, cli, tmp_path):
    folder, _ = trained_surgery("bottleneck")
    r = cli("export", folder, "--out", tmp_path / "out")
    assert r.code == 2 and "cannot be merged" in r.err and "--as surgery" in r.err
    r = cli("export", folder, "--as", "peft", "--out", tmp_path / "out")
    assert r.code == 2 and "--as surgery" in r.err
    assert not (tmp_path / "out").exists()


def test_export_bad_input(lora_run, cli, tmp_path):
    _, run = lora_run
    for args, message in (((run, "--as", "onnx"), "--as"), ((run, "--cell", "fold9-seed0"), "--cell"),
                          ((tmp_path / "nope",), "no such"), ((tmp_path,), "neither a run")):
        r = cli("export", *args, "--out", tmp_path / "x")
        assert r.code == 2 and message in r.err and "Traceback" not in r.err, (args, r.err)
    (tmp_path / "x").mkdir()
    r = cli("export", run, "--out", tmp_path / "x")
    assert r.code == 2 and "--force" in r.err


def test_every_command_writing_a_model_writes_a_card(tiny_dir, cli, tmp_path):
    base = tiny_dir("ast", max_length=100)
    assert cli("tiny", "ast", "--out", tmp_path / "tiny").code == 0
    assert cli("inject", "lora", "--model", base, "--out", tmp_path / "lora").code == 0
    assert cli("inject", "lora", "--model", base, "--out", tmp_path / "full", "--full").code == 0
    assert cli("merge-lora", tmp_path / "full", "--out", tmp_path / "folded").code == 0
    assert cli("strip", tmp_path / "lora", "--out", tmp_path / "stripped").code == 0
    for name, loads in (("tiny", "from_pretrained"), ("lora", "surgeon.load"), ("full", "surgeon.load"),
                        ("folded", "from_pretrained"), ("stripped", "from_pretrained")):
        card = (tmp_path / name / "README.md").read_text()
        assert card.startswith("---\nlibrary_name:") and loads in card, name
        assert "## Made by" in card and "surgeon " in card
    lora = (tmp_path / "lora" / "README.md").read_text()
    assert f"surgeon inject lora --model {base} --out {tmp_path / 'lora'}" in lora and "| lora |" in lora
    help_text = cli("inject", "--help").out
    assert "surgeon.load" in " ".join(help_text.split())  # --full: from_pretrained would drop the adapters


def test_a_base_models_own_card_is_kept(tmp_path):
    from surgeon.cards import BASE_CARD_NAME, model_card, write_card

    (tmp_path / "README.md").write_text("---\nlicense: bsd-3-clause\n---\n# AST\n")
    write_card(tmp_path, model_card("merged", ["a merge"]))
    assert (tmp_path / BASE_CARD_NAME).read_text().startswith("---\nlicense: bsd-3-clause")
    card = (tmp_path / "README.md").read_text()
    assert BASE_CARD_NAME in card
    write_card(tmp_path, model_card("again", ["a merge"]))  # surgeon's own card is replaced, not kept
    assert (tmp_path / BASE_CARD_NAME).read_text().startswith("---\nlicense: bsd-3-clause")
