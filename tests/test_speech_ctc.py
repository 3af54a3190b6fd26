"""The "ctc" task: a tiny HuBERT learns synthetic speech; the recipe loop runs CTC with Learnable-MAM."""
from __future__ import annotations

import json

import torch

# a tiny HuBERT whose feature encoder has HuBERT's real frame rate (320 samples = 20 ms per frame)
NO_NOISE = dict(apply_spec_augment=False, layerdrop=0.0, hidden_dropout=0.0, attention_dropout=0.0,
                activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0)
FAST = dict(conv_dim=(32, 32, 32, 32), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 8, 8, 4), num_conv_pos_embeddings=8)


def test_task_is_registered():
    from surgeon.speech.ctc_task import CTCTask
    from surgeon.train.tasks import get_task

    task = get_task("ctc")
    assert isinstance(task, CTCTask)
    assert {"wer", "cer", "loss", "word_ins_share", "char_sub_share"} <= set(task.metrics)
    assert task.model_class("hubert") == "HubertForCTC" and task.model_class("wav2vec2") == "Wav2Vec2ForCTC"


def test_cer_falls_when_fine_tuning(tmp_path):
    """Minimal loop (the CTC task's forward/loss/tally, as the recipe loop calls them) on sine-tone
    'letters': the model leaves the all-blank plateau and transcribes most characters. Scored on all
    16 clips (12 of them trained on): this checks that CTC training, decoding and scoring work
    together, not generalisation. (The recipe loop itself is exercised in the next test.)"""
    from surgeon.data import AudioDataset, collate, feature_spec_for
    from surgeon.speech.ctc_task import CTCTask
    from surgeon.speech.datasets import make_synthetic_manifest, read_transcripts
    from surgeon.tiny import build_tiny

    index = read_transcripts(make_synthetic_manifest(tmp_path, num=16, seed=0, letters="ABC", letter_seconds=0.12,
                                                     max_words=2))
    # no SpecAugment (with 25 frames per clip, HuBERT's 10-frame time masks hide whole letters), no
    # LayerDrop and no dropout: the run then depends on the seeds alone
    model = build_tiny("hubert", model_class="HubertForCTC", seed=0, **FAST, **NO_NOISE)
    task = CTCTask()
    task.prepare(model, [])
    spec = feature_spec_for(model.config.to_dict(), "hubert")
    train = AudioDataset([it for it in index.items if it.group == "train"], spec, None)
    every = AudioDataset(index.items, spec, None)
    loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(0))

    def evaluate():
        model.eval()
        tally = task.new_tally(0)
        with torch.no_grad():
            for batch in torch.utils.data.DataLoader(every, batch_size=16, collate_fn=collate):
                out = task.forward(model, batch)
                tally.add(out, batch, float(task.loss(out, batch)))
        return tally.result()

    before = evaluate()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(50):
        model.train()
        for batch in loader:
            loss = task.loss(task.forward(model, batch), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = evaluate()
    assert before["cer"] > 1.0  # random init: mostly insertions
    assert after["cer"] < 0.5  # well below 1.0, the all-blank plateau (0.06 here after 50 epochs)
    assert after["loss"] < 0.1 * before["loss"]
    assert set(after) >= {"wer", "cer", "loss", "word_sub_share", "char_ins_share", "char_del_share"}


def test_speech_formats_are_registered():
    from surgeon.data.registry import NEEDS_ROOT, reader
    from surgeon.speech.datasets import READERS

    for name, read in READERS.items():
        assert reader(name) is read and name in NEEDS_ROOT


def test_recipe_loop_with_learnable_mam(tmp_path, tiny_dir):
    from transformers import HubertForCTC

    from surgeon.recipes.load import load_recipe
    from surgeon.speech.datasets import make_synthetic_manifest
    from surgeon.train.runs import train_recipe

    data = make_synthetic_manifest(tmp_path / "data", num=8, seed=0, letters="AB", letter_seconds=0.03, max_words=1,
                                   max_letters=2)
    recipe = tmp_path / "lmam.toml"
    recipe.write_text(f"""
[model]
tiny = "hubert"
task = "ctc"
[method]
name = "full"
[merge]
source = "{tiny_dir('bert')}"
learnable = true
init_lam = 0.1
[data]
format = "transcripts"
root = "{data.parent}"
[train]
epochs = 2
batch_size = 4
lr = 1e-3
""")
    run = train_recipe(load_recipe(recipe), out=tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    cell = results["cells"][0]
    assert {"wer", "cer", "loss", "word_sub_share", "char_del_share", "lam_layer_0", "lam_layer_1"} <= set(cell["test"])
    assert all(0.0 <= cell["test"][f"lam_layer_{i}"] <= 1.0 for i in (0, 1))
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [e for e in epochs if e["event"] == "step"]  # the trajectory: lam per layer after every step
    assert steps and all(set(e["lam"]) == {"0", "1"} for e in steps)
    epochs = [e for e in epochs if e["event"] == "epoch"]
    assert len(epochs) == 2 and all(set(e["lam"]) == {"0", "1"} for e in epochs)
    assert steps[-1]["lam"] == epochs[-1]["lam"]
    merged = run / "checkpoints" / cell["name"] / "merged"
    model = HubertForCTC.from_pretrained(merged)
    plain = set(HubertForCTC(model.config).state_dict())
    assert set(model.state_dict()) == plain  # no lam, no source copies, no interpolation left
    assert (run / "checkpoints" / cell["name"] / "lam.png").read_bytes()[:4] == b"\x89PNG"
    card = (merged / "README.md").read_text()  # the merged model's card: its source and the lam learnt
    assert "Learnable-MAM" in card and str(tiny_dir("bert")) in card and "lam per layer (initial -> learnt): 0: 0.1 -> " in card
    # the worst utterances, reference beside hypothesis, and the edit breakdown (paper 003 Tables 4, 6)
    details = json.loads((run / "details" / f"{cell['name']}-test.json").read_text())
    assert details["num_utterances"] == cell["counts"]["test"] and details["worst"]
    assert {"key", "reference", "hypothesis", "wer", "cer"} <= set(details["worst"][0])
    assert details["wer"] == cell["test"]["wer"]
    # every utterance with its raw S/I/D counts, transcript and decoded text (surgeon compare reads them)
    utts = details["utterances"]
    assert len(utts) == details["num_utterances"]
    assert {"key", "reference", "hypothesis", "transcript", "decoded", "words", "chars"} <= set(utts[0])
    assert sum(u["words"]["substitutions"] for u in utts) == details["word_edits"]["substitutions"]
    # surgeon eval keeps them too, and compare reads the run directory and the eval document alike
    from surgeon.speech.compare import compare, load_evaluation
    from surgeon.train.runs import evaluate_recipe

    evaluated = evaluate_recipe(load_recipe(recipe), model_ref=str(merged))
    (tmp_path / "eval.json").write_text(json.dumps(evaluated))
    doc = compare(load_evaluation(run), load_evaluation(tmp_path / "eval.json"))
    assert doc["num_utterances"] == len(utts)


def test_paper_fine_tuning_recipes_run_three_seeds(tmp_path):
    """Paper 003 averages its fine-tuning rows over 3 runs: the FT, MAM + FT and L-MAM + FT recipes
    train one cell per seed 0, 1, 2 (results.json then has mean and std); the zero-shot row trains none."""
    from surgeon.recipes.load import load_recipe
    from surgeon.speech.datasets import make_synthetic_manifest, read_transcripts
    from surgeon.train.runs import plan_cells

    index = read_transcripts(make_synthetic_manifest(tmp_path, num=8, seed=0))
    for ds in ("ljspeech", "vctk"):
        for row in ("ft", "mam-ft", "lmam-ft"):
            recipe = load_recipe(f"mam-{row}-{ds}", check_paths=False)
            assert recipe.train.seeds == [0, 1, 2]
            assert [c.name for c in plan_cells(recipe, index)] == ["official-seed0", "official-seed1", "official-seed2"]
            assert [c.name for c in plan_cells(recipe, index, seed=1)] == ["official-seed1"]
        assert load_recipe(f"mam-mam-{ds}", check_paths=False).train.seeds is None


def test_generated_mam_recipes_follow_paper_003():
    """Table 5's set-up: HuBERT + BERT, AdamW at 1e-5, batch 32, 2 epochs on LJ Speech and 1 on VCTK;
    the best static merges of Table 2 (12-19 at 0.25, all at 0.05)."""
    from surgeon_recipes.generate import all_recipes

    mam = {k: v for k, v in all_recipes().items() if k.startswith("mam-")}
    assert len(mam) == 8
    for name, doc in mam.items():
        ds = name.rsplit("-", 1)[1]
        assert doc["model"] == {"ref": "hubert", "task": "ctc"} and doc["train"]["batch_size"] == 32, name
        assert doc["train"]["epochs"] == {"ljspeech": 2, "vctk": 1}[ds], name
        lr = doc["train"]["lr"]
        assert (lr if isinstance(lr, float) else lr["backbone"]) == 1e-5, name
        if name.startswith("mam-mam-"):
            assert (doc["merge"]["init_lam"], doc["merge"]["layers"]) == (
                {"ljspeech": (0.25, list(range(12, 20))), "vctk": (0.05, "all")}[ds]), name
