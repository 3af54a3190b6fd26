"""Several PETL runs merged (issue 14 item 2's second use case): a config names models, so a LoRA run
is folded into one first (`surgeon export RUN --as model`); a surgery directory given as a model is
refused with that command. Task arithmetic over two folded LoRA runs is the base plus both updates."""
from __future__ import annotations

import torch

from surgeon.io.checkpoint import Checkpoint
from test_lora_merge_surgeon import make_surgeon_adapter  # noqa: E402 (LoRA adapters with non-zero B)
from test_merge_seam import cli, write_config  # noqa: E402


def test_two_lora_runs_merged_by_task_arithmetic(tiny_dir, tmp_path, capsys):
    base = tiny_dir("ast")
    runs = [make_surgeon_adapter(base, tmp_path / f"run{s}", scaling=0.5, head=False, seed=s) for s in (1, 2)]
    as_runs = write_config(tmp_path / "runs.toml", "task-arithmetic", [{"ref": r} for r, _, _ in runs], base=base)
    capsys.readouterr()
    assert cli("merge", as_runs, "--out", tmp_path / "never") == 2
    err = capsys.readouterr().err
    assert "models.0.ref:" in err and "is a surgery directory" in err and "--as model" in err
    assert not (tmp_path / "never").exists()

    models = []
    for i, (run, _, _) in enumerate(runs):
        assert cli("export", run, "--as", "model", "--out", tmp_path / f"model{i}") == 0
        models.append(tmp_path / f"model{i}")
    cfg = write_config(tmp_path / "merge.toml", "task-arithmetic", [{"ref": m} for m in models], base=base)
    assert cli("merge", cfg, "--out", tmp_path / "merged") == 0

    from surgeon.hf import family_of_model, layer_module_path, load_pretrained

    model = load_pretrained(base)  # the adapters are keyed by its module paths
    merged, original = Checkpoint.open(tmp_path / "merged"), Checkpoint.open(base)
    (_, lora1, _), (_, lora2, _) = runs
    for i in range(original.dims["num_layers"]):
        for role in ("q", "v"):
            key = original.role_key(i, role)
            path = layer_module_path(model, family_of_model(model), i, role)
            (a1, b1), (a2, b2) = lora1[path], lora2[path]
            want = original.get(key) + 0.5 * (b1 @ a1) + 0.5 * (b2 @ a2)
            torch.testing.assert_close(merged.get(key), want, atol=1e-6, rtol=1e-6)
        untouched = original.role_key(i, "k")  # no LoRA on k: both task vectors are 0 there
        assert torch.equal(merged.get(untouched), original.get(untouched))
