"""Bad input to `surgeon merge`: one line on stderr, exit 2, nothing left behind; atomic outputs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from surgeon.io.checkpoint import Checkpoint


def cli(*args) -> int:
    from surgeon_cli.main import run

    with pytest.raises(SystemExit) as e:
        run([str(a) for a in args])
    return e.value.code


def fails(capsys, tmp_path, *args) -> str:
    """Run `surgeon merge ... --out tmp/out`; assert exit 2, one stderr line, no output; return the line."""
    out = tmp_path / "out"
    before = set(tmp_path.iterdir())
    assert cli("merge", *args, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("surgeon: error: "), err
    assert set(tmp_path.iterdir()) == before  # no output, no temporary directory
    return err


def no_tensor_reads(monkeypatch):
    """Make every way of reading tensor data fail loudly: checks must come from headers alone."""
    from surgeon.io import kernel_copy
    from surgeon.merging import stream

    monkeypatch.setattr(Checkpoint, "get", lambda self, name: pytest.fail(f"read {name}"))
    monkeypatch.setattr(stream, "read_array", lambda ckpt, name: pytest.fail(f"read {name}"))
    monkeypatch.setattr(kernel_copy, "copy_range", lambda file, *args, **kw: pytest.fail(f"copied from {file}"))


def test_hidden_size_mismatch_names_both_shapes(tiny_dir, tmp_path, capsys, monkeypatch):
    no_tensor_reads(monkeypatch)
    err = fails(capsys, tmp_path, "--source", tiny_dir("bert", hidden_size=48), "--target", tiny_dir("hubert"), "--lam", "0.1")
    assert "bert, 2 layers x hidden 48" in err and "hubert, 2 layers x hidden 32" in err


def test_layer_count_mismatch_needs_layer_map(tiny_dir, tmp_path, capsys, monkeypatch):
    no_tensor_reads(monkeypatch)
    err = fails(capsys, tmp_path, "--source", tiny_dir("bert", num_hidden_layers=4), "--target", tiny_dir("hubert"), "--lam", "0.1")
    assert "4 layers" in err and "2 layers" in err and "--layer-map" in err


def test_hidden_mismatch_with_layer_map_is_refused(tiny_dir, tmp_path, capsys):
    err = fails(capsys, tmp_path, "--source", tiny_dir("vit", hidden_size=48), "--target", tiny_dir("ast"),
                "--lam", "0.1", "--layer-map", "0:0")
    assert "hidden" in err


@pytest.mark.parametrize("lam", ["1.5", "-0.1", "nan", "abc", "0.1,0.2,0.3"])
def test_lam_outside_unit_interval_or_wrong_count(tiny_dir, tmp_path, capsys, lam):
    err = fails(capsys, tmp_path, "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", lam)
    assert "--lam" in err


@pytest.mark.parametrize("option,value", [("--layers", "0-2"), ("--layers", "5"), ("--layers", "x"),
                                          ("--layer-map", "0:7"), ("--layer-map", "9:0"), ("--layer-map", "0-1")])
def test_layers_out_of_range(tiny_dir, tmp_path, capsys, option, value):
    err = fails(capsys, tmp_path, "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.1", option, value)
    assert option in err


def test_bad_layer_selection_file(tiny_dir, tmp_path, capsys):
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"layers": [0, 9]}))
    err = fails(capsys, tmp_path, "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.1", "--layers-from", sel)
    assert "sel.json" in err and "9" in err


def test_target_without_attention(tiny_dir, tmp_path, capsys):
    """A target checkpoint whose layers lack the q/k/v the anatomy names."""
    from surgeon.io.writer import save_state_dict

    tgt = Checkpoint.open(tiny_dir("hubert"))
    bad = tmp_path / "noattn"
    bad.mkdir()
    (bad / "config.json").write_bytes((tgt.path / "config.json").read_bytes())
    save_state_dict(bad, {k: tgt.get(k) for k in tgt.keys() if ".attention." not in k})
    err = fails(capsys, tmp_path, "--source", tiny_dir("bert"), "--target", bad, "--lam", "0.1")
    assert "no attention q" in err


def test_noise_source_needs_statistics(tiny_dir, tmp_path, capsys):
    err = fails(capsys, tmp_path, "--source", "noise:source", "--target", tiny_dir("hubert"), "--lam", "0.1")
    assert "--noise-from" in err
    fails(capsys, tmp_path, "--source", "noise:pink", "--target", tiny_dir("hubert"), "--lam", "0.1")


def sharded_copy(ckpt: Checkpoint, out) -> list:
    """The same model as a sharded checkpoint (index + several shards); returns the shard files."""
    from surgeon.io.writer import save_state_dict

    out.mkdir()
    (out / "config.json").write_bytes((ckpt.path / "config.json").read_bytes())
    return save_state_dict(out, ckpt.state_dict(), max_shard_bytes=20_000)


def test_sharded_inputs_merge_and_a_corrupt_shard_is_refused(tiny_dir, tmp_path, capsys):
    src = Checkpoint.open(tiny_dir("bert"))
    shards = sharded_copy(src, tmp_path / "sharded")
    assert len(shards) > 2
    assert cli("merge", "--source", tmp_path / "sharded", "--target", tiny_dir("hubert"), "--lam", "1",
               "--out", tmp_path / "ok") == 0
    key = Checkpoint.open(tiny_dir("hubert")).role_key(1, "v")
    assert torch.equal(Checkpoint.open(tmp_path / "ok").get(key), src.get(src.role_key(1, "v")))
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: len(data) - 100])
    err = fails(capsys, tmp_path, "--source", tmp_path / "sharded", "--target", tiny_dir("hubert"), "--lam", "0.1")
    assert shards[1].name in err


def test_existing_output_needs_force(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    assert cli("merge", "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.1", "--out", out) == 2
    assert "--force" in capsys.readouterr().err and (out / "keep").exists()
    assert cli("merge", "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.1", "--out", out, "--force") == 0
    assert not (out / "keep").exists() and (out / "merge.json").exists()


def test_output_inside_input_is_refused(tiny_dir, tmp_path, capsys):
    target = tiny_dir("hubert")
    assert cli("merge", "--source", tiny_dir("bert"), "--target", target, "--lam", "0.1", "--out", target / "merged") == 2
    assert not (target / "merged").exists()


def test_failure_midway_leaves_previous_output_intact(tiny_dir, tmp_path, monkeypatch):
    from surgeon.merging import mam

    out = tmp_path / "out"
    assert cli("merge", "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.1", "--out", out) == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    calls = {"n": 0}
    real = mam.interpolate

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(mam, "interpolate", failing)
    assert cli("merge", "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.9", "--out", out, "--force") == 1
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


KILLED_MERGE = """
import sys, time
from surgeon.io.writer import CheckpointWriter
real = CheckpointWriter._advance
def slow(self, *args):
    if self._pos == 5:
        print("half", flush=True)
        time.sleep(60)
    return real(self, *args)
CheckpointWriter._advance = slow
from surgeon_cli.main import run
run(sys.argv[1:])
"""


def test_killed_merge_leaves_no_output(tiny_dir, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_MERGE, "merge", "--source", str(tiny_dir("bert")), "--target",
         str(tiny_dir("hubert")), "--lam", "0.1", "--out", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "half"
        assert any(tmp_path.iterdir())  # the temporary directory is being written
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not out.exists()
