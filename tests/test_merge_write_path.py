"""The merge's write path (issue 14 item 4): tensors written by offset, untouched ones copied in the
kernel on a thread, the user-space fallback, the errors, and the start-up imports of `surgeon merge`."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from surgeon.io import kernel_copy
from surgeon.io.checkpoint import Checkpoint
from surgeon.io.safetensors_header import read_header
from surgeon.io.writer import CheckpointWriter, TensorSpec, write_checkpoint


def merge(cli, tiny_dir, out, lam="0.3", *more):
    r = cli("merge", "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", lam, "--out", out, *more)
    assert r.code == 0, r.err
    return r


def files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "README.md"}  # the card names --out


def refuse(code, calls):
    def copy_file_range(*args):
        calls.append(args)
        raise OSError(code, os.strerror(code))

    return copy_file_range


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP], ids=errno.errorcode.get)
def test_refused_kernel_copy_falls_back_to_the_same_bytes(cli, tiny_dir, tmp_path, monkeypatch, code):
    merge(cli, tiny_dir, tmp_path / "kernel")
    calls = []
    monkeypatch.setattr(os, "copy_file_range", refuse(code, calls))
    merge(cli, tiny_dir, tmp_path / "fallback")
    assert files(tmp_path / "fallback") == files(tmp_path / "kernel")
    assert len(calls) == 1  # refused once: the writer does not ask again for the other ranges


def test_a_system_without_copy_file_range_writes_the_same_bytes(cli, tiny_dir, tmp_path, monkeypatch):
    merge(cli, tiny_dir, tmp_path / "kernel")
    monkeypatch.delattr(os, "copy_file_range")
    merge(cli, tiny_dir, tmp_path / "plain")
    assert files(tmp_path / "plain") == files(tmp_path / "kernel")


def test_a_full_disk_during_a_copy_is_one_line_and_leaves_nothing(cli, tiny_dir, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "copy_file_range", refuse(errno.ENOSPC, calls))
    r = cli("merge", "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.3", "--out", tmp_path / "out")
    assert r.code == 2 and calls  # not retried through user space, not a traceback
    assert r.err.startswith("surgeon: error: ") and r.err.count("\n") == 1 and "No space left" in r.err, r.err
    assert list(tmp_path.iterdir()) == []


def test_a_failing_copy_thread_fails_the_merge_and_leaves_nothing(cli, tiny_dir, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("copy thread broke")

    monkeypatch.setattr(kernel_copy, "copy_range", broken)
    r = cli("merge", "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.3", "--out", tmp_path / "out")
    assert r.code == 1 and "copy thread broke" in r.err
    assert list(tmp_path.iterdir()) == []


def test_lam_0_output_is_byte_for_byte_the_sequential_layout(cli, tiny_dir, tmp_path):
    """Written by offset from two threads, the file is exactly what writing header and tensors one
    after the other (the writer before issue 14) gives for the same tensors and metadata."""
    out = tmp_path / "out"
    merge(cli, tiny_dir, out, "0")  # lam 0: every tensor is the target's, bit for bit
    target = Checkpoint.open(tiny_dir("hubert"))
    header = read_header(out / "model.safetensors")
    specs = [TensorSpec(name, info.dtype, tuple(info.shape)) for name, info in header.tensors.items()]
    ref = tmp_path / "ref"
    ref.mkdir()
    write_checkpoint(ref, specs, lambda s: target.get(s.name), metadata=header.metadata)
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()


def test_sharded_copies_and_writes_by_offset_match_sequential_writing(tiny_dir, tmp_path):
    src = Checkpoint.open(tiny_dir("ast"))
    names = list(src.keys())
    specs = [TensorSpec(k, src.info(k).dtype, tuple(src.info(k).shape)) for k in names]
    ref, out = tmp_path / "ref", tmp_path / "out"
    ref.mkdir(), out.mkdir()
    write_checkpoint(ref, specs, lambda s: src.get(s.name), metadata={"a": "b"}, max_shard_bytes=30_000)
    with CheckpointWriter(out, specs, {"a": "b"}, max_shard_bytes=30_000) as writer:
        for i, k in enumerate(names):
            if i % 3 == 1:  # runs of copies broken by written tensors, and by shard ends
                writer.write(k, src.get(k))
            else:
                writer.copy_from(src.info(k))
    assert len(writer.filenames) > 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in ref.iterdir()}


def test_copy_range_resumes_in_user_space_where_the_kernel_stops(tmp_path, monkeypatch):
    data = os.urandom(3 * 4096 + 17)
    (tmp_path / "src").write_bytes(data)
    real = os.copy_file_range
    calls = []

    def half_then_refuse(src, dst, count, offset_src, offset_dst):
        calls.append(count)
        if len(calls) > 1:
            raise OSError(errno.EINVAL, "refused")
        return real(src, dst, min(count, 5000), offset_src, offset_dst)

    monkeypatch.setattr(os, "copy_file_range", half_then_refuse)
    with open(tmp_path / "dst", "wb", buffering=0) as f:
        f.write(b"H" * 10)
        assert kernel_copy.copy_range(tmp_path / "src", 100, len(data) - 100, f.fileno(), 10) is False
    assert (tmp_path / "dst").read_bytes() == b"H" * 10 + data[100:]


def test_mam_merge_imports_neither_torch_nor_transformers(tiny_dir, tmp_path):
    code = (
        "import sys; from surgeon_cli.main import run\n"
        "try:\n    run(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'rich', 'safetensors') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    args = ["merge", "--source", str(tiny_dir("bert")), "--target", str(tiny_dir("hubert")), "--lam", "0.1",
            "--out", str(tmp_path / "out")]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_merge_help_imports_no_numpy():
    code = (
        "import sys; from surgeon_cli.main import run\n"
        "try:\n    run(['merge', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_shard_size_splits_every_merge_output_with_the_same_tensors(tiny_dir, tmp_path, capsys):
    """--shard-size on merge (flags and config) and merge-lora: an index and several shards whose
    tensors are those of the one-file output, bit for bit, and transformers loads it."""
    import torch
    from surgeon_cli.main import run

    from surgeon.io.checkpoint import Checkpoint
    from test_merge_seam import write_config

    def cli(*args):
        try:
            run([str(a) for a in args])
        except SystemExit as e:
            return e.code
        return 0

    src, tgt = tiny_dir("bert"), tiny_dir("hubert")
    cfg = write_config(tmp_path / "m.toml", "linear", [{"ref": src}, {"ref": src, "weight": 0.5}])
    from test_lora_merge_surgeon import make_surgeon_adapter

    adapter, _, _ = make_surgeon_adapter(src, tmp_path / "adapter", head=False)
    cases = {"mam": ("merge", "--source", src, "--target", tgt, "--lam", "0.3"), "config": ("merge", cfg),
             "lora": ("merge-lora", src, "--adapter", adapter)}
    for name, args in cases.items():
        assert cli(*args, "--out", tmp_path / f"{name}-one") == 0
        assert cli(*args, "--shard-size", "40KB", "--out", tmp_path / f"{name}-sharded") == 0
        sharded = tmp_path / f"{name}-sharded"
        assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("model-*.safetensors"))) > 1
        one, many = Checkpoint.open(tmp_path / f"{name}-one"), Checkpoint.open(sharded)
        assert list(one.keys()) == list(many.keys())
        for key in one.keys():
            assert one.get(key).contiguous().view(torch.uint8).equal(many.get(key).contiguous().view(torch.uint8)), key
    from surgeon.hf import load_pretrained

    load_pretrained(tmp_path / "mam-sharded")  # transformers reads the index
    capsys.readouterr()
    assert cli("merge", *cases["mam"][1:], "--shard-size", "lots", "--out", tmp_path / "bad") == 2
    assert "--shard-size: 'lots' is not a size" in capsys.readouterr().err and not (tmp_path / "bad").exists()
