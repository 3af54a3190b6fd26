"""Checkpoint reading and writing: streaming, sharding, atomic outputs, inputs never overwritten."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from surgeon.errors import SurgeonError
from surgeon.io.atomic import TMP_MARK, atomic_output, check_output
from surgeon.io.checkpoint import Checkpoint
from surgeon.io.writer import TensorSpec, save_state_dict, st_dtype, write_checkpoint
from surgeon.tiny import build_tiny


def test_get_reads_exactly_the_stored_tensor(tiny_dir):
    path = tiny_dir("hubert")
    ckpt = Checkpoint.open(path)
    reference = load_file(path / "model.safetensors")
    assert set(ckpt.keys()) == set(reference)
    for name, tensor in ckpt.iter_tensors():
        assert torch.equal(tensor, reference[name]) and tensor.dtype == reference[name].dtype


def test_sharded_write_loads_in_transformers(tmp_path):
    from transformers import ASTForAudioClassification

    model = build_tiny("ast")
    model.save_pretrained(tmp_path / "ref")
    src = Checkpoint.open(tmp_path / "ref")
    out = tmp_path / "out"
    with atomic_output(out) as tmp:
        specs = [TensorSpec(k, src.info(k).dtype, src.info(k).shape) for k in src.keys()]
        files = write_checkpoint(tmp, specs, lambda s: src.get(s.name), max_shard_bytes=30_000)
        shutil.copy(tmp_path / "ref" / "config.json", tmp)
    assert len(files) > 1 and (out / "model.safetensors.index.json").exists()
    loaded = ASTForAudioClassification.from_pretrained(out)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert Checkpoint.open(out).format == "safetensors-sharded"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool])
def test_dtypes_round_trip(tmp_path, dtype):
    t = (torch.randn(3, 5) * 10).to(dtype)
    save_state_dict(tmp_path, {"x": t, "empty": torch.zeros(0, 4, dtype=dtype)}, metadata={"a": "b"})
    ckpt = Checkpoint.open(tmp_path / "model.safetensors")
    assert torch.equal(ckpt.get("x"), t) and ckpt.get("empty").shape == (0, 4)
    assert ckpt.metadata == {"a": "b"}
    assert torch.equal(load_file(tmp_path / "model.safetensors")["x"], t)  # the reference reader agrees


def test_writer_enforces_the_plan(tmp_path):
    from surgeon.io.writer import CheckpointWriter

    writer = CheckpointWriter(tmp_path, [TensorSpec("a", "F32", (2,)), TensorSpec("b", "F32", (3,))])
    with pytest.raises(SurgeonError, match="plan order"):
        writer.write("b", torch.zeros(3))
    writer.write("a", torch.zeros(2))
    with pytest.raises(SurgeonError, match="never written"):
        writer.close()


def test_writer_rejects_a_tensor_of_the_wrong_shape(tmp_path):
    with pytest.raises(SurgeonError, match="planned F32"):
        write_checkpoint(tmp_path, [TensorSpec("a", "F32", (2,))], lambda s: torch.zeros(3))


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("killed midway")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("keep me")
    with pytest.raises(RuntimeError):
        with atomic_output(out, force=True) as tmp:
            (tmp / "new").write_text("x")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "old").read_text() == "keep me"


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SurgeonError, match="--force"):
        check_output(out, force=False)
    with atomic_output(out, force=True) as tmp:
        (tmp / "new").write_text("x")
    assert [p.name for p in out.iterdir()] == ["new"]


def test_output_under_a_file_is_a_user_error(tmp_path, cli):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SurgeonError, match="cannot write the output here"):
        with atomic_output(tmp_path / "file" / "out"):
            pass
    r = cli("tiny", "bert", "--out", tmp_path / "file" / "out")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "cannot write the output here" in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("relation", ["same", "inside", "around"])
def test_output_never_overwrites_an_input(tmp_path, relation):
    inp = tmp_path / "model"
    inp.mkdir()
    out = {"same": inp, "inside": inp / "sub", "around": tmp_path}[relation]
    with pytest.raises(SurgeonError, match="overwrite the input"):
        check_output(out, force=True, inputs=[inp])


def test_a_killed_writer_leaves_no_output(tmp_path):
    """SIGKILL in the middle of writing: the output name never appears."""
    out = tmp_path / "out"
    script = (
        "import sys, time, torch\n"
        "from surgeon.io.atomic import atomic_output\n"
        "from surgeon.io.writer import TensorSpec, write_checkpoint\n"
        "specs = [TensorSpec(f't{i}', 'F32', (1000,)) for i in range(1000)]\n"
        "def slow(s):\n"
        "    print('writing', flush=True); time.sleep(0.01); return torch.zeros(1000)\n"
        "with atomic_output(sys.argv[1]) as tmp:\n"
        "    write_checkpoint(tmp, specs, slow)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(TMP_MARK in name for name in leftovers)  # only a hidden temporary, never `out`


def test_st_dtype_names():
    assert st_dtype(torch.float32) == "F32" and st_dtype(torch.bfloat16) == "BF16"


def test_reads_do_not_keep_the_file_mapped(tiny_dir):
    """Tensors own their bytes: deleting the checkpoint afterwards does not affect them."""
    path = tiny_dir("vit")
    copy = path.parent / "copy"
    shutil.copytree(path, copy)
    ckpt = Checkpoint.open(copy)
    name = next(iter(ckpt.keys()))
    t = ckpt.get(name)
    shutil.rmtree(copy)
    assert torch.equal(t, Checkpoint.open(path).get(name))
    assert not os.path.exists(copy)
