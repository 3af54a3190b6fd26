"""Issue 17's adversarial findings, each through the CLI as a user types it: outputs that would destroy
more than an output, inputs outside the model directory, sizes that would hang or allocate gigabytes,
malformed files that used to end as `internal error`, data that train rejects and validate passed, and
the kill and race windows of writing (a few bounded trials each)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from surgeon.io.atomic import TMP_MARK
from surgeon.tiny import save_tiny


def one_line(r, *needles, code=2):
    assert r.code == code, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("surgeon: error: ") and "Traceback" not in r.err, r.err
    assert "internal error" not in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    path = tmp_path_factory.mktemp("adv") / "bert"
    save_tiny("bert", path)
    return path


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- 1. outputs that would replace more than an output -------------------------------------------------

@pytest.mark.parametrize("out", ["", ".", "..", "HOME", "/"])
def test_dangerous_out_is_refused_even_with_force(out, tmp_path, monkeypatch, cli):
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("precious")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "work"))
    given = str(tmp_path / "work") if out == "HOME" else out
    one_line(cli("tiny", "bert", "--out", given, "--force"), "refusing to write there")
    assert (work / "keep.txt").read_text() == "precious"


def test_out_that_contains_an_input_is_refused(bert, tmp_path, cli):
    model = copy_model(bert, tmp_path / "models" / "bert")
    one_line(cli("inject", "lora", "--model", model, "--out", tmp_path / "models", "--force"), "overwrite the input")
    assert (model / "model.safetensors").is_file()


# -- 4, 5. inputs that live outside the model directory ------------------------------------------------

def hf_snapshot(bert: Path, cache: Path) -> Path:
    """The Hugging Face cache layout: snapshots/REV/<file> -> ../../blobs/<hash>."""
    repo = cache / "models--org--tiny"
    snap, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in bert.iterdir():
        blob = blobs / f"blob-{f.name}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return snap


def test_force_never_deletes_the_blobs_a_snapshot_links_to(bert, tmp_path, cli):
    snap = hf_snapshot(bert, tmp_path / "hub")
    blobs = snap.parent.parent / "blobs"
    one_line(cli("inject", "lora", "--model", snap, "--out", blobs, "--force"), "overwrite the input")
    assert len(list(blobs.iterdir())) == len(list(bert.iterdir()))
    r = cli("inspect", snap, "--json")  # the cache layout itself is a fine input
    assert r.code == 0, r.err


def test_shards_must_lie_inside_the_model(bert, tmp_path, cli):
    from surgeon.tiny import build_tiny

    d = tmp_path / "s"
    build_tiny("bert").save_pretrained(d, max_shard_size="40KB")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    (tmp_path / "outside").mkdir()
    shutil.move(d / first, tmp_path / "outside" / first)
    for name in (f"../outside/{first}", str(tmp_path / "outside" / first)):
        index["weight_map"] = {k: (name if v == first else v) for k, v in index["weight_map"].items()}
        (d / "model.safetensors.index.json").write_text(json.dumps(index))
        one_line(cli("inspect", d, "--check"), "outside the model directory")
        first = name


def test_a_sibling_linking_outside_the_model_is_not_copied(bert, tmp_path, cli):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    model = copy_model(bert, tmp_path / "m")
    (model / "vocab.txt").symlink_to(secret)
    assert cli("inject", "lora", "--model", model, "--out", tmp_path / "adapter").code == 0
    one_line(cli("strip", tmp_path / "adapter", "--out", tmp_path / "out"), "outside the model directory")
    assert not (tmp_path / "out").exists()


# -- 6, 9. sizes and configs that do not describe the weights -------------------------------------------

@pytest.mark.parametrize("layers, needle", [(10**9, "1000000000"), (1, "hold 2 layers"), ("two", "positive integer")])
def test_config_that_disagrees_with_the_weights(bert, tmp_path, cli, layers, needle):
    model = copy_model(bert, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config["num_hidden_layers"] = layers
    (model / "config.json").write_text(json.dumps(config))
    one_line(cli("inject", "lora", "--model", model, "--out", tmp_path / "o"), needle)


def test_hubert_config_over_bert_weights(bert, tiny_dir, tmp_path, cli):
    model = copy_model(bert, tmp_path / "m")
    shutil.copy(tiny_dir("hubert") / "config.json", model / "config.json")
    one_line(cli("inject", "lora", "--model", model, "--out", tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_too_many_experts_is_refused_before_allocating(bert, tmp_path, cli):
    one_line(cli("inject", "soft-moa", "--model", bert, "--out", tmp_path / "o", "--num-experts", "100000000"),
             "num_experts")


# -- 11. malformed files that ended as internal errors ----------------------------------------------------

def header_file(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


MALFORMED_HEADERS = {
    "nested": b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "boolean_shape": json.dumps({"t": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}).encode(),
    "shape_above_2_64": json.dumps({"t": {"dtype": "F32", "shape": [0, 10**30], "data_offsets": [0, 0]}}).encode(),
    "shape_product_above_2_64": json.dumps({"t": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 0]}}).encode(),
    "dtype_not_a_string": json.dumps({"t": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}).encode(),
    "offsets_boolean": json.dumps({"t": {"dtype": "BOOL", "shape": [1], "data_offsets": [False, True]}}).encode(),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_HEADERS))
def test_malformed_header_is_one_line_and_safetensors_agrees(name, tmp_path, cli):
    from safetensors import safe_open

    f = header_file(tmp_path / f"{name}.safetensors", MALFORMED_HEADERS[name], b"\0" * 4)
    one_line(cli("inspect", f, "--check"), str(f))
    with pytest.raises(Exception):  # the reference library refuses the same file
        with safe_open(str(f), "pt") as g:
            [g.get_tensor(k) for k in g.keys()]


@pytest.mark.parametrize("value", [3, ["model.safetensors"], None, ""])
def test_index_weight_map_values_must_be_file_names(bert, tmp_path, cli, value):
    d = copy_model(bert, tmp_path / "m")
    ckpt_keys = list(json.loads((d / "model.safetensors").read_bytes()[8:8 + struct.unpack(
        "<Q", (d / "model.safetensors").read_bytes()[:8])[0]]).keys())
    weight_map = {k: "model.safetensors" for k in ckpt_keys if k != "__metadata__"}
    weight_map[next(iter(weight_map))] = value
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    one_line(cli("inspect", d), "weight_map")


def test_nested_config_json(bert, tmp_path, cli):
    d = copy_model(bert, tmp_path / "m")
    (d / "config.json").write_text('{"a":' + "[" * 100_000 + "]" * 100_000 + "}")
    one_line(cli("inspect", d), "config.json")


@pytest.mark.parametrize("case", ["complex64", "qint8", "int_key", "sparse"])
def test_pickles_safetensors_cannot_hold(case, tmp_path, cli):
    tensor = {"complex64": torch.zeros(2, dtype=torch.complex64),
              "qint8": torch.quantize_per_tensor(torch.zeros(2), 0.1, 0, torch.qint8),
              "int_key": torch.zeros(2), "sparse": torch.zeros(2, 2).to_sparse()}[case]
    key = 7 if case == "int_key" else "w"
    f = tmp_path / "w.pt"
    torch.save({key: tensor}, f)
    one_line(cli("inspect", f, "--allow-pickle"), str(f))


def test_malformed_surgery_record_in_the_metadata(tiny_dir, tmp_path, cli):
    from safetensors.torch import save_file

    d = tmp_path / "m"
    assert cli("inject", "lora", "--model", tiny_dir("bert"), "--out", d).code == 0
    f = d / "adapter.safetensors"
    from safetensors import safe_open

    with safe_open(str(f), "pt") as g:
        tensors = {k: g.get_tensor(k) for k in g.keys()}
    (d / "surgery.json").unlink(missing_ok=True)
    save_file(tensors, str(f), metadata={"surgeon.surgery": json.dumps({"format": "x", "methods": ["lora"]})})
    one_line(cli("strip", d, "--out", tmp_path / "s"), "methods[0]")


def test_a_full_disk_names_the_output(bert, tmp_path, cli, monkeypatch):
    import errno

    import transformers

    def full(self, *a, **k):  # what a full disk raises from a write() on an open file: no file name
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full)
    out = tmp_path / "out"
    one_line(cli("tiny", "bert", "--out", out), str(out), "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_seed_beyond_the_rngs_is_a_recipe_error(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\ntiny = "ast"\n[method]\nname = "bitfit"\n[data]\nformat = "synthetic"\n'
                      '[train]\nepochs = 1\nbatch_size = 2\nlr = 1e-3\nseed = 99999999999999999999\n')
    one_line(cli("validate", recipe), "seed")


# -- 14. strip of an adapter whose base is unproven -----------------------------------------------------------

def test_strip_of_an_adapter_without_a_fingerprint_needs_the_base(tiny_dir, tmp_path, cli):
    d = tmp_path / "a"
    base = tiny_dir("bert")
    assert cli("inject", "lora", "--model", base, "--out", d).code == 0
    record = json.loads((d / "surgery.json").read_text())
    record["base"].pop("fingerprint", None)
    (d / "surgery.json").write_text(json.dumps(record))
    one_line(cli("strip", d, "--out", tmp_path / "s"), "no fingerprint", "--base")
    assert cli("strip", d, "--out", tmp_path / "s", "--base", base).code == 0


# -- 10, 13. kills and races while writing ---------------------------------------------------------------------

def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_dead_writers_temporaries_go_at_the_next_write(tmp_path, cli):
    from surgeon.io.atomic import TMP_MARK

    out = tmp_path / "out"
    pid = dead_pid()
    stale = tmp_path / f".out{TMP_MARK}{pid}-deadbeef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    alive = tmp_path / f".out{TMP_MARK}{os.getpid()}-cafecafe"  # a writer still running: left alone
    alive.mkdir()
    assert cli("tiny", "bert", "--out", out).code == 0
    assert not stale.exists() and alive.exists() and (out / "model.safetensors").is_file()


def test_killed_between_the_renames_of_a_swap_the_old_output_comes_back(tmp_path, cli):
    """The fallback swap (no renameat2): a kill after `out` went aside leaves it findable, and the next
    write puts it back before anything else."""
    from surgeon.io.atomic import TMP_MARK

    out = tmp_path / "out"
    assert cli("tiny", "bert", "--out", out).code == 0
    aside = tmp_path / f".out{TMP_MARK}{dead_pid()}-old-0badf00d"
    os.rename(out, aside)
    r = cli("tiny", "vit", "--out", out)  # out was restored by the cleanup: it exists, no --force
    one_line(r, "exists")
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"


def test_force_replacement_swaps_in_one_step(tmp_path):
    """A reader that opens the output directory once sees one whole version, never a mix or nothing,
    while the output is replaced with --force (30 replacements, bounded)."""
    from surgeon.io.atomic import atomic_output, exchange

    out = tmp_path / "out"
    probe_a, probe_b = tmp_path / "a", tmp_path / "b"
    probe_a.mkdir(), probe_b.mkdir()
    if not exchange(probe_a, probe_b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    with atomic_output(out) as tmp:
        (tmp / "merge.json").write_text("0")
        (tmp / "weights").write_text("0")
    stop, seen = threading.Event(), []

    def read():
        while not stop.is_set():
            try:
                fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                seen.append("missing")
                continue
            try:
                a = os.read(os.open("merge.json", os.O_RDONLY, dir_fd=fd), 16)
                b = os.read(os.open("weights", os.O_RDONLY, dir_fd=fd), 16)
                seen.append("ok" if a == b else "mixed")
            except FileNotFoundError:
                seen.append("gone")  # the directory this reader holds was the old one, now removed
            finally:
                os.close(fd)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in range(1, 31):
            with atomic_output(out, force=True) as tmp:
                (tmp / "merge.json").write_text(str(version))
                (tmp / "weights").write_text(str(version))
    finally:
        stop.set()
        reader.join()
    assert "missing" not in seen and "mixed" not in seen and seen.count("ok") > 0


# -- 3, 8. one writer per training run; workers die with their launcher -------------------------------------------

TRAIN_RECIPE = """
[model]
tiny = "ast"
config = { max_length = 100 }
[method]
name = "bitfit"
[data]
format = "synthetic"
options = { num_classes = 2, per_class = 6, seconds = 1.0 }
max_frames = 100
[train]
epochs = 1
batch_size = 4
lr = 1e-3
"""


def test_a_second_writer_of_a_running_training_is_refused(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(TRAIN_RECIPE)
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom surgeon.io.lock import OutputLock\n"
        f"lock = OutputLock({str(out)!r}, 'run')\nprint('locked', flush=True)\ntime.sleep(120)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = one_line(cli("train", recipe, "--out", out, "--force"), f"pid {holder.pid}")
        assert "writing this run" in line
        one_line(cli("train", recipe, "--out", out, "--resume"), f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()


@pytest.mark.xdist_group("multi-process")
def test_killing_the_launcher_kills_its_workers(tmp_path):
    """SIGKILL of `surgeon train --nproc 2`: both workers are gone within seconds (one trial)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(TRAIN_RECIPE.replace("epochs = 1", "epochs = 50"))
    env = {**os.environ, "SURGEON_CACHE": str(tmp_path / "cache")}
    launcher = subprocess.Popen([sys.executable, "-m", "surgeon_cli.main", "train", str(recipe), "--out",
                                 str(tmp_path / "run"), "--nproc", "2"], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr", "w"))

    def children(pid: int) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
        return found

    def running(pid: int) -> bool:
        try:
            return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 120
    started = tmp_path / ".run.surgeon-partial" / "run.json"
    while time.monotonic() < deadline and launcher.poll() is None and not started.exists():
        time.sleep(0.2)  # the run has begun: both workers are past their set-up
    found = children(launcher.pid)
    launcher.kill()
    launcher.wait()
    assert len(found) == 2, f"the workers never started: {(tmp_path / 'stderr').read_text()[-2000:]}"
    deadline = time.monotonic() + 30
    while any(map(running, found)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in found if running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived their launcher"


# -- 12. audio train rejects: validate reports it, and the messages name the file --------------------------------

def write_wav(path: Path, samples, rate: int = 16000):
    import soundfile as sf

    sf.write(str(path), np.asarray(samples, dtype="float32"), rate, subtype="FLOAT")
    return path


def fake_wav_header(path: Path, rate: int, frames: int) -> Path:
    """A WAV header claiming `frames` 16-bit frames at `rate` Hz, with almost no data after it."""
    data = frames * 2
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
                     + b"data" + struct.pack("<I", data) + b"\0" * 64)
    return path


def folder_recipe(tmp_path: Path, on_error: str = "raise") -> Path:
    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            write_wav(root / c / f"{i}.wav", 0.1 * np.sin(np.arange(8000) * (0.01 + 0.01 * i)))
    recipe = tmp_path / "r.toml"
    recipe.write_text(TRAIN_RECIPE.replace('format = "synthetic"\noptions = { num_classes = 2, per_class = 6, seconds = 1.0 }',
                                           f'format = "folder"\nroot = "{root}"\non_error = "{on_error}"'))
    return recipe


@pytest.mark.parametrize("case", ["nan", "inf", "one_hertz", "empty", "garbage"])
def test_validate_reports_audio_that_train_rejects(case, tmp_path, cli):
    recipe = folder_recipe(tmp_path)
    bad = tmp_path / "data" / "a" / "0.wav"
    if case in ("nan", "inf"):
        write_wav(bad, [0.0, float(case), 0.1] * 100)
    elif case == "one_hertz":
        fake_wav_header(bad, rate=1, frames=200_000)
    elif case == "empty":
        write_wav(bad, [])
    else:
        bad.write_bytes(b"RIFF not really a wav file at all")
    one_line(cli("validate", recipe), str(bad))


def test_a_nan_wav_is_named_and_skipped_with_on_error_skip(tmp_path, cli):
    from surgeon.data.features import load_audio
    from surgeon.errors import SurgeonError

    bad = write_wav(tmp_path / "nan.wav", [0.0, float("nan")] * 100)
    with pytest.raises(SurgeonError, match="nan.wav: the audio holds NaN"):
        load_audio(bad)
    t0 = time.monotonic()
    with pytest.raises(SurgeonError, match="sample rate 1 Hz"):
        load_audio(fake_wav_header(tmp_path / "1hz.wav", rate=1, frames=200_000))
    assert time.monotonic() - t0 < 30  # not a timing assertion of speed: a hang guard


@pytest.mark.parametrize("setting, needle", [("data.max_frames=1000000000", "max_frames"),
                                             ('data.options={seconds=100000}', "seconds")])
def test_sizes_that_would_allocate_gigabytes(setting, needle, tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(TRAIN_RECIPE)
    one_line(cli("train", recipe, "--out", tmp_path / "run", "--set", setting), needle)


def test_a_cache_dir_that_cannot_be_written(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(TRAIN_RECIPE)
    one_line(cli("train", recipe, "--out", tmp_path / "run", "--set", 'data.cache_dir="/proc/surgeon-cache"'),
             "/proc/surgeon-cache")


@pytest.mark.parametrize("crash_at", ["swap", "cleanup"])
def test_a_kill_inside_workdir_complete_leaves_a_findable_run(tmp_path, monkeypatch, crash_at):
    """Before the swap the work directory is still resumable; after it the run directory is complete."""
    from surgeon.io import atomic
    from surgeon.train.workdir import WorkDir, partial_dir, resumable

    out = tmp_path / "run"
    work = partial_dir(out)
    (work / "resume" / "cell").mkdir(parents=True)
    (work / "run.json").write_text("{}")
    (work / "results.json").write_text("{}")

    class Killed(BaseException):
        pass

    def die(*a, **k):
        raise Killed

    if crash_at == "swap":
        monkeypatch.setattr(atomic.os, "rename", die)
    else:
        monkeypatch.setattr(Path, "unlink", die)
    with pytest.raises(Killed):
        WorkDir(work, out, writer=True).complete(force=False)
    if crash_at == "swap":
        assert resumable(work) and not out.exists()
    else:
        assert (out / "results.json").is_file() and not work.exists()


# -- 1 (merge, train), 6, 14: --out in the working directory; --layers that select nothing or too much ----------

def test_merge_and_train_into_the_current_directory_are_refused(tiny_dir, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("precious")
    merge = ("merge", "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.1")
    for out in (".", ""):
        one_line(cli(*merge, "--out", out, "--force"), "refusing to write there")
    recipe = tmp_path / "r.toml"
    recipe.write_text(TRAIN_RECIPE)
    one_line(cli("train", recipe, "--out", ".", "--force"), "refusing to write there")
    assert (tmp_path / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("layers, needle", [("", "no layers given"), ("0-1000000000", "out of range"),
                                            (",", "no layers given")])
def test_merge_layers_that_select_nothing_or_too_much(tiny_dir, tmp_path, cli, layers, needle):
    t0 = time.monotonic()
    one_line(cli("merge", "--source", tiny_dir("bert"), "--target", tiny_dir("hubert"), "--lam", "0.1",
                 "--layers", layers, "--out", tmp_path / "o"), "--layers", needle)
    assert time.monotonic() - t0 < 30  # a hang guard: the range is checked before it is expanded
    assert not (tmp_path / "o").exists()


# -- 2. values that would break out of the job script -------------------------------------------------------------

@pytest.mark.parametrize("where", ["out", "set", "partition"])
def test_a_newline_never_reaches_the_job_script(where, tmp_path, cli):
    evil = "x\ntouch " + str(tmp_path / "PWNED")
    args = ["train", "quickstart", "--launcher", "slurm", "--dry-run", "--out", str(tmp_path / "o")]
    if where == "out":
        args[-1] = str(tmp_path / evil)
    elif where == "set":
        args = args[:-2] + ["--set", f"output.dir={tmp_path / evil}"]
    else:
        args += ["--partition", evil]
    r = cli(*args)
    one_line(r, "--partition" if where == "partition" else "control character")
    assert "#SBATCH" not in r.out and not (tmp_path / "PWNED").exists()


def test_shell_words_in_paths_are_quoted_in_the_script_comments_too(tmp_path, cli):
    out = tmp_path / "o $(touch PWNED); `touch PWNED2`"
    r = cli("train", "quickstart", "--launcher", "slurm", "--dry-run", "--out", str(out))
    assert r.code == 0, r.err
    for line in r.out.splitlines():
        if "$(touch" in line:  # every occurrence sits inside single quotes
            assert f"'{out}" in line or f"'{out}/" in line, line


# -- 7, 11. LoRA scalings and adapter tensors that are not finite, PEFT configs that are not valid ------------------

@pytest.fixture(scope="module")
def surgeon_adapter(tmp_path_factory):
    from surgeon_cli.main import run

    root = tmp_path_factory.mktemp("adv-lora")
    save_tiny("bert", root / "base")
    try:
        run(["inject", "lora", "--model", str(root / "base"), "--out", str(root / "adapter")])
    except SystemExit as e:
        assert not e.code
    return root / "base", root / "adapter"


@pytest.mark.parametrize("scaling", ["NaN", "Infinity", "-Infinity", '"big"'])
def test_a_lora_scaling_that_is_not_a_finite_number(surgeon_adapter, scaling, tmp_path, cli):
    base, adapter = surgeon_adapter
    d = copy_model(adapter, tmp_path / "a")
    text = (d / "surgery.json").read_text()
    record = json.loads(text)
    entry = next(m for m in record["methods"] if m["method"] == "lora")
    entry["options"]["scaling"] = "@@"
    (d / "surgery.json").write_text(json.dumps(record).replace('"@@"', scaling))
    one_line(cli("merge-lora", base, "--adapter", d, "--out", tmp_path / "m"), "scaling")
    assert not (tmp_path / "m").exists()


def test_non_finite_adapter_weights_are_refused_naming_the_key(surgeon_adapter, tmp_path, cli):
    from safetensors import safe_open
    from safetensors.torch import save_file

    base, adapter = surgeon_adapter
    d = copy_model(adapter, tmp_path / "a")
    f = d / "adapter.safetensors"
    with safe_open(str(f), "pt") as g:
        meta, tensors = g.metadata(), {k: g.get_tensor(k) for k in g.keys()}
    key = next(k for k in sorted(tensors) if "lora_B" in k or k.endswith(".B") or "lora" in k)
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("inf")
    save_file(tensors, str(f), metadata=meta)
    one_line(cli("merge-lora", base, "--adapter", d, "--out", tmp_path / "m"), key, "NaN or Inf")
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory):
    peft = pytest.importorskip("peft")
    import warnings

    from surgeon.hf import load_pretrained

    root = tmp_path_factory.mktemp("adv-peft")
    save_tiny("bert", root / "base")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(load_pretrained(root / "base"), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query"]))
    pm.save_pretrained(root / "peft")
    return root / "base", root / "peft"


PEFT_CONFIGS = {  # (change to adapter_config.json, what the one line names)
    "r_zero": ({"r": 0}, "r of"),
    "r_text": ({"r": "eight"}, "r of"),
    "alpha_nan": ({"lora_alpha": "@NaN"}, "lora_alpha"),
    "alpha_inf": ({"lora_alpha": "@Infinity"}, "lora_alpha"),
    "bad_regex": ({"rank_pattern": {"query[": 2}}, "not a regular expression"),
    "pattern_list": ({"alpha_pattern": ["query"]}, "alpha_pattern"),
}


@pytest.mark.parametrize("case", sorted(PEFT_CONFIGS))
def test_a_peft_config_that_is_not_valid(peft_adapter, case, tmp_path, cli):
    base, adapter = peft_adapter
    d = copy_model(adapter, tmp_path / "a")
    change, needle = PEFT_CONFIGS[case]
    config = {**json.loads((d / "adapter_config.json").read_text()), **change}
    text = json.dumps(config).replace('"@NaN"', "NaN").replace('"@Infinity"', "Infinity")
    (d / "adapter_config.json").write_text(text)
    one_line(cli("merge-lora", base, "--adapter", d, "--out", tmp_path / "m"), needle)
    assert not (tmp_path / "m").exists()


def test_a_backtracking_module_pattern_is_stopped():
    """(a|aa)+b over a name of 40 a's ran for minutes with re; the matcher gives up after a second."""
    from surgeon.errors import SurgeonError
    from surgeon.merging.peft_format import pattern_value

    t0 = time.monotonic()
    with pytest.raises(SurgeonError, match="catastrophic backtracking"):
        pattern_value({"(a|aa)+b": 2}, "a" * 40, 8)
    assert time.monotonic() - t0 < 30  # a hang guard, not a speed assertion
    assert pattern_value({"query": 2}, "bert.encoder.layer.0.attention.self.query", 8) == 2  # a suffix after a dot
    assert pattern_value({"query": 2}, "bert.encoder.layer.0.attention.self.myquery", 8) == 8  # not a bare suffix


def test_weights_of_other_shapes_than_the_config_says(bert, tmp_path, cli):
    model = copy_model(bert, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config["intermediate_size"] += 8
    (model / "config.json").write_text(json.dumps(config))
    one_line(cli("inject", "lora", "--model", model, "--out", tmp_path / "o"), str(model))
    assert not (tmp_path / "o").exists()


# -- 12. a manifest given as its CSV file, as docs/data.md allows --------------------------------------------------

def test_a_manifest_given_as_its_csv_path(tmp_path, cli):
    from surgeon.data.miniature import make_manifest

    csv_path = make_manifest(tmp_path / "data")
    recipe = tmp_path / "r.toml"
    recipe.write_text(TRAIN_RECIPE.replace('format = "synthetic"\noptions = { num_classes = 2, per_class = 6, seconds = 1.0 }',
                                           f'format = "manifest"\nroot = "{csv_path}"'))
    r = cli("validate", recipe)
    assert r.code == 0, r.err
    missing = recipe.read_text().replace(str(csv_path), str(tmp_path / "data" / "nope.csv"))
    recipe.write_text(missing)
    one_line(cli("validate", recipe), "nope.csv")


# -- 10, 13. real kills of a `merge --force` at its three windows (3 trials, each bounded) --------------------------

KILLED_AT = """
import os, sys, time
from surgeon.io import atomic

def hold():
    print("now", flush=True)
    time.sleep(60)

point = sys.argv[1]
if point == "writing":  # halfway through the new weights
    from surgeon.io.writer import CheckpointWriter
    advance = CheckpointWriter._advance
    def slow(self, *a):
        if self._pos == 5:
            hold()
        return advance(self, *a)
    CheckpointWriter._advance = slow
elif point == "after-swap":  # the new output is in place, the old one not yet removed
    remove = atomic._remove
    def slow_remove(p):
        if atomic.TMP_MARK in p.name:
            hold()
        return remove(p)
    atomic._remove = slow_remove
else:  # between-renames: no renameat2, the old output renamed aside, the new one not yet in
    atomic.exchange = lambda a, b: False
    rename = os.rename
    def slow_rename(a, b):
        rename(a, b)
        if "-old-" in str(b):
            hold()
    atomic.os.rename = slow_rename
from surgeon_cli.main import run
run(sys.argv[2:])
"""


def merged_lam(out: Path) -> float:
    from surgeon.io.checkpoint import Checkpoint

    Checkpoint.open(out)  # whole: every header and shard checks out
    return json.loads((out / "merge.json").read_text())["lam"]["0"]


@pytest.mark.parametrize("point, after_kill", [("writing", 0.1), ("after-swap", 0.2), ("between-renames", None)])
def test_a_merge_killed_during_force_leaves_one_whole_output(point, after_kill, tiny_dir, tmp_path, cli):
    out = tmp_path / "out"
    merge = ["merge", "--source", str(tiny_dir("bert")), "--target", str(tiny_dir("hubert")), "--out", str(out)]
    assert cli(*merge, "--lam", "0.1").code == 0
    proc = subprocess.Popen([sys.executable, "-c", KILLED_AT, point, *merge, "--lam", "0.2", "--force"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "now"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    temps = [p for p in tmp_path.iterdir() if f"{TMP_MARK}{proc.pid}-" in p.name]
    assert temps  # what the killed writer left, named with its pid
    if after_kill is None:  # no output for that moment; the old one is findable beside it
        assert not out.exists() and any("-old-" in p.name for p in temps)
    else:
        assert merged_lam(out) == after_kill
    assert cli(*merge, "--lam", "0.3", "--force").code == 0  # the next write cleans up and replaces
    assert merged_lam(out) == 0.3
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_train_names_a_nan_wav_or_skips_it(tmp_path, cli):
    """on_error = "raise": one line naming the file (not `loss became nan`); "skip": the run goes on and
    its results list the file."""
    recipe = folder_recipe(tmp_path)
    bad = write_wav(tmp_path / "data" / "a" / "0.wav", [0.0, float("nan"), 0.1] * 100)
    r = cli("train", recipe, "--out", tmp_path / "run")  # progress lines come first on stderr
    assert r.code == 2 and "Traceback" not in r.err and "loss became" not in r.err, r.err
    assert r.err.strip().splitlines()[-1] == f"surgeon: error: {bad}: the audio holds NaN or infinite samples"
    recipe.write_text(recipe.read_text().replace('on_error = "raise"', 'on_error = "skip"'))
    r = cli("train", recipe, "--out", tmp_path / "run", "--force")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["skipped"] == ["a/0.wav"]


def test_a_tensor_named_data_offsets_is_no_duplicate(tmp_path, cli):
    """The header's fast duplicate check counts `"data_offsets"` keys; a tensor of that name must not
    trip it, and a real duplicate is still named."""
    entry = lambda begin: {"dtype": "F32", "shape": [1], "data_offsets": [begin, begin + 4]}  # noqa: E731
    f = header_file(tmp_path / "ok.safetensors", json.dumps({"data_offsets": entry(0), "b": entry(4)}).encode(), b"\0" * 8)
    assert cli("inspect", f, "--check").code != 1
    dup = b'{"a": %s, "a": %s}' % (json.dumps(entry(0)).encode(), json.dumps(entry(4)).encode())
    one_line(cli("inspect", header_file(tmp_path / "dup.safetensors", dup, b"\0" * 8), "--check"), "duplicate tensor name 'a'")


def test_two_real_trainings_of_one_output(tmp_path, cli):
    """A real run holds its output: a second `train --force` stops naming it; once the first is SIGKILLed
    its lock is gone with it and a new run completes with its recipe and metrics (one trial)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(TRAIN_RECIPE.replace("epochs = 1", "epochs = 200"))
    out = tmp_path / "run"
    env = {**os.environ, "SURGEON_CACHE": str(tmp_path / "cache")}
    first = subprocess.Popen([sys.executable, "-m", "surgeon_cli.main", "train", str(recipe), "--out", str(out)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = tmp_path / ".run.surgeon-partial" / "run.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None and not started.exists():
            time.sleep(0.1)
        assert started.exists() and first.poll() is None
        line = one_line(cli("train", recipe, "--out", out, "--force"), f"pid {first.pid}")
        assert "writing this run" in line
    finally:
        first.kill()
        first.wait()
    r = cli("train", recipe, "--out", out, "--force", "--set", "train.epochs=1")
    assert r.code == 0, r.err
    assert (out / "metrics.jsonl").is_file() and (out / "recipe.toml").is_file() and (out / "results.json").is_file()
