"""A corpus of malformed inputs: each ends with one line on stderr naming the file, exit code 2,
no traceback, and a pickle's payload never runs."""
import json
import pickle
import shutil
import struct
import subprocess
import sys

import pytest
import torch

from surgeon.tiny import save_tiny


def _split(raw: bytes):
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


class Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "model"
    save_tiny("bert", path)
    return path


def _edit_header(raw, edit):
    header, data = _split(raw)
    edit(header)
    return _join(header, data)


def _first(header):
    return next(k for k in header if k != "__metadata__")


def _second(header):
    return [k for k in header if k != "__metadata__"][1]


CORRUPTIONS = {
    "empty": lambda raw: b"",
    "garbage": lambda raw: bytes(range(256)) * 4,
    "truncated_data": lambda raw: raw[: len(raw) - 100],
    "truncated_header": lambda raw: raw[:50],
    "header_not_json": lambda raw: struct.pack("<Q", 16) + b"{not json at all" + raw[24:],
    "header_not_object": lambda raw: _join([1, 2, 3], b""),
    "offsets_beyond_buffer": lambda raw: _edit_header(
        raw, lambda h: h[_first(h)].update(data_offsets=[0, 10**12])),
    "offsets_overlap": lambda raw: _edit_header(
        raw, lambda h: h[_second(h)].update(data_offsets=h[_first(h)]["data_offsets"])),
    "length_disagrees_with_shape": lambda raw: _edit_header(
        raw, lambda h: h[_first(h)].update(shape=[h[_first(h)]["shape"][0] + 1] + h[_first(h)]["shape"][1:])),
    "unknown_dtype": lambda raw: _edit_header(raw, lambda h: h[_first(h)].update(dtype="F33")),
    "duplicate_names": lambda raw: (lambda h, d: struct.pack("<Q", len(h)) + h + d)(
        *(lambda header, data: (
            json.dumps(header).encode()[:-1] + b"," + json.dumps({_first(header): header[_first(header)]}).encode()[1:],
            data))(*_split(raw))),
}


def assert_one_line_error(r, *needles):
    assert r.code == 2, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("surgeon: error: ")
    assert "Traceback" not in r.err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_safetensors(name, good, tmp_path, cli):
    raw = (good / "model.safetensors").read_bytes()
    bad = tmp_path / f"{name}.safetensors"
    bad.write_bytes(CORRUPTIONS[name](raw))
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("inspect", bad, "--json")
    assert_one_line_error(r, str(bad))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_corrupt_weights_inside_a_model_dir(good, tmp_path, cli):
    d = tmp_path / "m"
    shutil.copytree(good, d)
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[:-8])
    assert_one_line_error(cli("inspect", d), "model.safetensors")


def test_missing_path(tmp_path, cli):
    assert_one_line_error(cli("inspect", tmp_path / "nope"), "no such file or directory")


def test_directory_without_weights(tmp_path, cli):
    assert_one_line_error(cli("inspect", tmp_path), "no model weights")


def test_directory_with_several_weight_files_is_not_guessed(good, tmp_path, cli):
    """Shards without an index, or a Trainer checkpoint's optimizer.pt beside the weights: never a silent pick."""
    d = tmp_path / "m"
    d.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        shutil.copy(good / "model.safetensors", d / name)
    assert_one_line_error(cli("inspect", d), "2 weight files", "a.safetensors, b.safetensors")
    p = tmp_path / "p"
    p.mkdir()
    shutil.copy(good / "config.json", p)
    state = {"encoder.layer.0.attention.self.query.weight": torch.zeros(2, 2)}
    torch.save(state, p / "pytorch_model-00001-of-00002.bin")
    torch.save(state, p / "pytorch_model-00002-of-00002.bin")
    assert_one_line_error(cli("inspect", p, "--allow-pickle"), "2 weight files")
    torch.save({"state": {}, "param_groups": []}, p / "optimizer.pt")
    torch.save(state, p / "pytorch_model.bin")  # the conventional name says which
    assert cli("inspect", p, "--allow-pickle", "--json").json()["num_tensors"] == 1


def test_eval_needs_a_run_or_a_model(cli):
    assert_one_line_error(cli("eval", "quickstart"), "exactly one of --run DIR or --model REF")


def test_unknown_architecture(tmp_path, cli):
    from safetensors.torch import save_file

    # (an unknown model_type whose keys follow a known layout is read by that layout: test_families.py)
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    save_file({"h.0.attn.c_attn.weight": torch.zeros(2, 2)}, d / "model.safetensors")
    assert_one_line_error(cli("inspect", d), "unknown architecture", "gpt2")


def test_unknown_architecture_from_keys(tmp_path, cli):
    from safetensors.torch import save_file

    f = tmp_path / "w.safetensors"
    save_file({"transformer.h.0.attn.c_attn.weight": torch.zeros(2, 2)}, f)
    assert_one_line_error(cli("inspect", f), "unknown architecture")


def test_unreadable_config(good, tmp_path, cli):
    d = tmp_path / "m"
    shutil.copytree(good, d)
    (d / "config.json").write_text("{broken")
    assert_one_line_error(cli("inspect", d), "config.json", "not valid JSON")


def test_sharded_index_with_missing_shard(tmp_path, cli):
    d = tmp_path / "s"
    from surgeon.tiny import build_tiny

    build_tiny("bert").save_pretrained(d, max_shard_size="40KB")
    shard = sorted(d.glob("model-*.safetensors"))[-1]
    shard.unlink()
    assert_one_line_error(cli("inspect", d), "model.safetensors.index.json", shard.name, "missing")


def test_sharded_index_inconsistent_with_shards(tmp_path, cli):
    d = tmp_path / "s"
    from surgeon.tiny import build_tiny

    build_tiny("bert").save_pretrained(d, max_shard_size="40KB")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    key = next(k for k, v in index["weight_map"].items() if v == shards[0])
    index["weight_map"][key] = shards[1]
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_one_line_error(cli("inspect", d), key)


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt"])
def test_pickle_is_refused_and_its_payload_never_runs(tmp_path, cli, suffix):
    proof = tmp_path / "payload-ran"
    bad = tmp_path / f"evil{suffix}"
    bad.write_bytes(pickle.dumps({"w": Payload(str(proof))}))
    assert_one_line_error(cli("inspect", bad), str(bad), "arbitrary code", "--allow-pickle")
    assert not proof.exists()
    # even when the user opts in, weights_only=True refuses to run it
    assert_one_line_error(cli("inspect", bad, "--allow-pickle"), str(bad))
    assert not proof.exists()


def test_pickle_in_a_model_dir_is_refused(good, tmp_path, cli):
    d = tmp_path / "m"
    d.mkdir()
    shutil.copy(good / "config.json", d)
    torch.save({"encoder.layer.0.attention.self.query.weight": torch.zeros(2, 2)}, d / "pytorch_model.bin")
    assert_one_line_error(cli("inspect", d), "pytorch_model.bin", "--allow-pickle")


def test_allow_pickle_loads_a_plain_state_dict_weights_only(good, tmp_path, cli):
    from surgeon.io.checkpoint import Checkpoint

    state = Checkpoint.open(good).state_dict()
    f = tmp_path / "plain.bin"
    torch.save(state, f)
    doc = cli("inspect", f, "--allow-pickle", "--json").json()
    assert doc["format"] == "pickle" and doc["family"] == "bert"
    assert doc["num_parameters"] == sum(t.numel() for t in state.values() if t.is_floating_point())


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"garbage!")
    cmd = [sys.executable, "-m", "surgeon_cli.main", "inspect", str(bad)]
    plain = subprocess.run(cmd, capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
    debug = subprocess.run(cmd + ["--debug"], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_usage_errors_are_one_line(cli):
    r = cli("inspect")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    r = cli("no-such-command")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
