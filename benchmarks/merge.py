"""Streaming merges against the naive way, on large-shaped checkpoints (random weights, float32).

Measured side by side in one run, each command in its own process (wall time; peak RSS by GNU time):
  surgeon merge --lam 0.1            vs  transformers load both + interpolate + save_pretrained
                                     vs  cp of the target's weights (the I/O floor)
  surgeon merge-lora                 vs  peft PeftModel.from_pretrained + merge_and_unload + save_pretrained
                                     vs  cp of the base's weights
  surgeon merge ties.toml (3 models) vs  load all four state dicts + TIES per tensor (mergekit's way:
                                         torch.topk, boolean masks) + save_file
                                     vs  reading the four inputs once (cat > /dev/null)
  (--only linear, task-arithmetic: the same for those methods; linear has no base, so three inputs)
Goals: peak memory <= 1/4 of the naive way's, wall time <= 1/2 of it; MAM within 1.5x of cp, an
N-model merge within 1.2x of reading its inputs once. Beside the MAM merge, its fixed cost: the same
command with --dry-run (interpreter, imports, typer's parsing, the plan from the headers).

surgeon's modules are byte-compiled first (as `pip install` does), and the dirty pages of one
command's output are written back (sync) before the next is timed, so none pays for another's.

Checkpoints (cached in benchmarks/.cache/, ~1.3 GB each at --size large): a bert-large-shaped
source/base (24 x 1024, the paper's BERT), two more of its shape (the TIES models), a hubert-large-
shaped target (HubertForCTC, 24 x 1024), plus a PEFT LoRA adapter (r = 16 on q, k, v, o of every
layer) for the base. --size small (6 x 512) is a quick run of the same comparison.

ViT -> BEATs (--only beats): a vit-base-shaped ViTModel into an iter3-shaped authors' .pt, output a .pt.

    python -m benchmarks.merge [--size large|small] [--repeats 1] [--only mam,lora,ties,task-arithmetic,linear,beats]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import CACHE, gib, random_checkpoint, surgeon_cmd

TIME = "/usr/bin/time"  # GNU time: peak RSS of exactly one command

NAIVE_MERGE = """
import sys, torch
from transformers import BertModel, HubertForCTC
src, tgt, out, lam = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
s = BertModel.from_pretrained(src)
t = HubertForCTC.from_pretrained(tgt)
with torch.no_grad():
    for ls, lt in zip(s.encoder.layer, t.hubert.encoder.layers):
        for a, b in ((ls.attention.self.query, lt.attention.q_proj), (ls.attention.self.key, lt.attention.k_proj),
                     (ls.attention.self.value, lt.attention.v_proj)):
            b.weight.copy_(lam * a.weight + (1 - lam) * b.weight)
            b.bias.copy_(lam * a.bias + (1 - lam) * b.bias)
t.save_pretrained(out)
"""

# ViT -> BEATs the naive way: both models in memory (transformers' ViT, the authors' .pt), q/k/v
# interpolated in place, the .pt saved again
NAIVE_BEATS = """
import sys, torch
from transformers import ViTModel
from surgeon.anatomy import FAMILIES
src, tgt, out, lam = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
vit, beats = FAMILIES["vit"], FAMILIES["beats"]
s = ViTModel.from_pretrained(src).state_dict()
ckpt = torch.load(tgt, map_location="cpu", weights_only=True)
t = ckpt["model"]
scheme = vit.scheme_in(s)
with torch.no_grad():
    for i in range(ckpt["cfg"]["encoder_layers"]):
        for role in ("q", "k", "v"):
            for leaf in ("weight", "bias"):
                key = beats.key(i, role, leaf)
                t[key] = lam * s[vit.key(i, role, leaf, scheme=scheme)] + (1 - lam) * t[key]
torch.save(ckpt, out)
"""

NAIVE_LORA = """
import sys
from peft import PeftModel
from transformers import BertModel
base, adapter, out = sys.argv[1:4]
model = PeftModel.from_pretrained(BertModel.from_pretrained(base), adapter).merge_and_unload()
model.save_pretrained(out)
"""


# an N-model merge the naive way: every state dict in memory, the method per tensor written as one
# would without surgeon (mergekit's way: stacked task vectors, torch.topk, boolean masks), save_file
NAIVE_MULTI = """
import sys, torch
from safetensors.torch import load_file, save_file
name, base, out, *models = sys.argv[1:]
b = load_file((models[0] if name == "linear" else base) + "/model.safetensors")
ms = [load_file(p + "/model.safetensors") for p in models]
w = torch.ones(len(ms))

def ties(x, base, density=0.5):
    deltas = []
    for xi in x:
        d = (xi - base).reshape(-1)
        kept = torch.zeros_like(d)
        idx = torch.topk(d.abs(), max(1, int(density * d.numel())), sorted=False).indices
        kept[idx] = d[idx]
        deltas.append(kept)
    wd = torch.stack(deltas) * w[:, None]
    sign = torch.where(wd.sum(0) >= 0, 1.0, -1.0)
    mask = torch.sign(wd) == sign
    divisor = (w[:, None] * mask).sum(0)
    divisor[divisor == 0] = 1.0
    return base + ((wd * mask).sum(0) / divisor).reshape(base.shape)

merged = {}
for k, t in b.items():
    if not t.is_floating_point():
        merged[k] = t
        continue
    x = [m[k].float() for m in ms]
    if name == "linear":
        r = sum(wi * xi for wi, xi in zip(w, x)) / w.sum()
    elif name == "task-arithmetic":
        r = t.float() + sum(wi * (xi - t.float()) for wi, xi in zip(w, x))
    else:
        r = ties(x, t.float())
    merged[k] = r.to(t.dtype)
save_file(merged, out, metadata={"format": "pt"})
"""


def peft_adapter(out: Path, base: Path, rank: int = 16) -> Path:
    """A PEFT LoRA directory for `base`, written by hand (random A and B), cached."""
    if (out / "adapter_config.json").exists():
        return out
    import torch

    from surgeon.io.atomic import atomic_output
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.io.writer import save_state_dict

    ckpt = Checkpoint.open(base)
    gen = torch.Generator().manual_seed(0)
    state = {}
    for i in range(ckpt.dims["num_layers"]):
        for role in ("q", "k", "v", "o"):
            key = ckpt.role_key(i, role)
            d_out, d_in = ckpt.info(key).shape
            module = key.removesuffix(".weight")
            state[f"base_model.model.{module}.lora_A.weight"] = torch.randn(rank, d_in, generator=gen) * 0.01
            state[f"base_model.model.{module}.lora_B.weight"] = torch.randn(d_out, rank, generator=gen) * 0.01
    config = {"peft_type": "LORA", "task_type": None, "r": rank, "lora_alpha": 2 * rank,
              "target_modules": ["query", "key", "value", "attention.output.dense"], "lora_dropout": 0.0,
              "bias": "none", "base_model_name_or_path": str(base)}
    with atomic_output(out, force=True) as tmp:
        save_state_dict(tmp, state, {"format": "pt"}, filename="adapter_model.safetensors")
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out


def measure(cmd: list[str], cleanup: Path | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one run of `cmd` in a child process.

    The child is started by /usr/bin/time: a child forked straight from this process would report
    this process's own (torch-sized) RSS as its peak, since Linux keeps the pre-exec maximum."""
    def clean():
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True) if cleanup.is_dir() else cleanup.unlink(missing_ok=True)

    clean()
    os.sync()  # start with no dirty pages of the previous command's output still being written back
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%M", "-o", rss.name, *map(str, cmd)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr.decode()[-2000:]}")
        peak_kb = int(rss.read().split()[-1])
    clean()
    return wall, peak_kb * 1024


def compile_bytecode() -> None:
    """Byte-compile surgeon and its CLI, as `pip install` does: an editable install run with
    PYTHONDONTWRITEBYTECODE=1 (as in surgeon's dev environment) compiles every surgeon module it
    imports from source on every run, about 40 ms of a merge's start-up that no installed copy pays."""
    import compileall

    import surgeon
    import surgeon_cli

    for pkg in (surgeon, surgeon_cli):
        compileall.compile_dir(Path(pkg.__file__).parent, quiet=1)


def warm(*paths: Path) -> None:
    """Read the inputs once so every contender starts with them in the page cache."""
    for p in paths:
        for f in sorted(p.glob("*.safetensors")):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def compare(title: str, runs: dict[str, tuple[list[str], Path]], repeats: int) -> dict:
    samples = {name: [] for name in runs}
    for _ in range(repeats):  # round-robin, so load on the shared machine hits all alike
        for name, (cmd, out) in runs.items():
            samples[name].append(measure(cmd, out))
    res = {name: (statistics.median(w for w, _ in s), max(m for _, m in s)) for name, s in samples.items()}
    print(f"\n{title}")
    width = max(map(len, res))
    for name, (wall, rss) in res.items():
        print(f"  {name:<{width}}  {wall:7.2f} s   peak RSS {gib(rss)}")
    return res


def report(res: dict, ours: str, naive: str, floor: str) -> None:
    (tw, tm), (nw, nm), (cw, _) = res[ours], res[naive], res[floor]
    goal = {"cp target": 1.5, "read inputs once": 1.2}.get(floor, 2)
    print(f"  memory {ours} / {naive}: {tm / nm:.3f}  (goal <= 0.25)")
    print(f"  time   {ours} / {naive}: {tw / nw:.3f}  (goal <= 0.5)")
    print(f"  time   {ours} / {floor}: {tw / cw:.2f}  (goal <= {goal:g})")


# the N-model cases (--only): method -> (needs the base, density); 3 models, weight 1 each
MULTI = {"ties": (True, 0.5), "task-arithmetic": (True, None), "linear": (False, None)}


def multi_config(path: Path, method: str, base: Path, models: list[Path]) -> Path:
    needs_base, density = MULTI[method]
    lines = [f'method = "{method}"'] + ([f'base = "{base}"'] if needs_base else [])
    for m in models:
        lines += ["[[models]]", f'ref = "{m}"', "weight = 1.0"] + ([f"density = {density}"] if density else [])
    path.write_text("\n".join(lines) + "\n")
    return path


SIZES = {
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "small": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each command (medians of wall time)")
    ap.add_argument("--size", choices=sorted(SIZES), default="large", help="bert-large shapes, or a quick small run")
    ap.add_argument("--only", default="mam,lora,ties", help="which comparisons to run (comma list of mam, lora, "
                    "ties, task-arithmetic, linear: the N-model merges; beats: ViT -> BEATs .pt)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if "beats" in only:
        beats_case(args.repeats)
    if not only - {"beats"}:
        return
    from transformers import BertConfig, HubertConfig

    shape = SIZES[args.size]
    bert = random_checkpoint(CACHE / f"bert-{args.size}-shaped", BertConfig(**shape), "BertModel")
    hubert = random_checkpoint(
        CACHE / f"hubert-{args.size}-shaped",
        HubertConfig(**shape, do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True, vocab_size=32),
        "HubertForCTC", seed=1,
    )
    size = lambda p: sum(f.stat().st_size for f in p.glob("*.safetensors"))  # noqa: E731
    print(f"source {bert} ({size(bert) / 1e9:.2f} GB), target {hubert} ({size(hubert) / 1e9:.2f} GB)")
    print("machine shared with other jobs: treat the figures as indicative")

    scratch = CACHE / "scratch"
    scratch.mkdir(exist_ok=True)
    py = sys.executable
    compile_bytecode()
    if "mam" in only:
        mam(bert, hubert, scratch, py, args.repeats)
    if "lora" in only:
        lora(bert, args.size, scratch, py, args.repeats)
    rows = {m: multi(m, bert, args.size, shape, scratch, py, args.repeats) for m in MULTI if m in only}
    if rows:
        side_by_side(rows)
    shutil.rmtree(scratch, ignore_errors=True)


def mam(bert, hubert, scratch, py, repeats) -> None:
    warm(bert, hubert)
    merge = ("merge", "--source", bert, "--target", hubert, "--lam", "0.1")
    res = compare(f"MAM merge ({bert.name} -> {hubert.name}, lam 0.1)", {
        "surgeon merge": (surgeon_cmd(*merge, "--out", scratch / "surgeon"), scratch / "surgeon"),
        # the fixed cost: interpreter, imports, typer's parsing, the plan from the headers; no numpy, no writing
        "  of it: start-up and plan (--dry-run)": (surgeon_cmd(*merge, "--dry-run", "--json"), None),
        "naive (transformers)": ([py, "-c", NAIVE_MERGE, str(bert), str(hubert), str(scratch / "naive"), "0.1"],
                                 scratch / "naive"),
        "cp target": (["cp", str(hubert / "model.safetensors"), str(scratch / "cp.safetensors")], scratch / "cp.safetensors"),
    }, repeats)
    report(res, "surgeon merge", "naive (transformers)", "cp target")
    fixed = res["  of it: start-up and plan (--dry-run)"][0]
    print(f"  time   (surgeon merge - start-up and plan) / cp target: {(res['surgeon merge'][0] - fixed) / res['cp target'][0]:.2f}"
          f"  (the writing alone)")


def lora(bert, size, scratch, py, repeats) -> None:
    adapter = peft_adapter(CACHE / f"bert-{size}-shaped-lora-r16", bert)
    warm(bert, adapter)
    res = compare(f"LoRA fold ({bert.name} base, PEFT adapter r=16 on q, k, v, o)", {
        "surgeon merge-lora": (surgeon_cmd("merge-lora", bert, "--adapter", adapter, "--out", scratch / "lora"),
                               scratch / "lora"),
        "naive (peft merge_and_unload)": ([py, "-c", NAIVE_LORA, str(bert), str(adapter), str(scratch / "peft")],
                                          scratch / "peft"),
        "cp base": (["cp", str(bert / "model.safetensors"), str(scratch / "cp.safetensors")], scratch / "cp.safetensors"),
    }, repeats)
    report(res, "surgeon merge-lora", "naive (peft merge_and_unload)", "cp base")


def multi(method, bert, size, shape, scratch, py, repeats) -> tuple:
    """One N-model merge (3 models of bert's shape, plus the base where the method has one) against
    the naive way and against reading its inputs once."""
    from transformers import BertConfig

    models = [random_checkpoint(CACHE / f"bert-{size}-shaped-task{j}", BertConfig(**shape), "BertModel", seed=10 + j)
              for j in range(3)]
    inputs = ([bert] if MULTI[method][0] else []) + models
    config = multi_config(scratch / f"{method}.toml", method, bert, models)
    files = [str(p / "model.safetensors") for p in inputs]
    warm(*inputs)
    what = f", density {MULTI[method][1]}" if MULTI[method][1] else ""
    ours, naive, floor = f"surgeon merge {method}.toml", "naive (load all, torch)", "read inputs once"
    res = compare(f"{method} merge of 3 models (bert-{size}-shaped{what}; inputs: {len(files)} files)", {
        ours: (surgeon_cmd("merge", config, "--out", scratch / method), scratch / method),
        naive: ([py, "-c", NAIVE_MULTI, method, str(bert), str(scratch / "naive.safetensors"), *map(str, models)],
                scratch / "naive.safetensors"),
        floor: (["sh", "-c", 'cat "$@" > /dev/null', "sh", *files], None),
    }, repeats)
    report(res, ours, naive, floor)
    return res[ours], res[naive], res[floor]


def side_by_side(rows: dict) -> None:
    """The N-model merges in one table: time and memory against the naive way and the read floor."""
    print("\nN-model merges side by side (3 models; time ratios, goal: vs floor <= 1.2)")
    print(f"  {'method':<16} {'surgeon':>8} {'naive':>8} {'floor':>7} {'/naive':>7} {'/floor':>7} {'mem/naive':>9}")
    for name, ((tw, tm), (nw, nm), (fw, _)) in rows.items():
        print(f"  {name:<16} {tw:7.2f}s {nw:7.2f}s {fw:6.2f}s {tw / nw:7.3f} {tw / fw:7.2f} {tm / nm:9.3f}")


def beats_case(repeats: int) -> None:
    """ViT -> BEATs (paper 003's AEC pair): a vit-base-shaped source into an iter3-shaped authors' .pt
    (fine-tuned: 527-way predictor), written as a .pt. A pickled target is loaded whole, by surgeon too,
    so its floor is the .pt's size in memory, not the streaming floor of a safetensors target."""
    from transformers import ViTConfig

    from surgeon.beats.fixtures import write_beats_checkpoint

    vit = random_checkpoint(CACHE / "vit-base-shaped", ViTConfig(), "ViTModel", seed=2)
    beats = CACHE / "BEATs_iter3_shaped.pt"
    if not beats.exists():
        write_beats_checkpoint(beats, "base", predictor_class=527, seed=3)
    print(f"source {vit} ({sum(f.stat().st_size for f in vit.glob('*.safetensors')) / 1e9:.2f} GB), "
          f"target {beats} ({beats.stat().st_size / 1e9:.2f} GB)")
    scratch = CACHE / "scratch-beats"
    scratch.mkdir(exist_ok=True)
    warm(vit)
    with open(beats, "rb") as fh:
        while fh.read(1 << 24):
            pass
    res = compare("MAM merge (vit-base-shaped -> BEATs iter3-shaped .pt, lam 0.1)", {
        "surgeon merge": (surgeon_cmd("merge", "--source", vit, "--target", beats, "--allow-pickle", "--lam", "0.1",
                                      "--out", scratch / "surgeon.pt"), scratch / "surgeon.pt"),
        "naive (load both, torch.save)": ([sys.executable, "-c", NAIVE_BEATS, str(vit), str(beats),
                                           str(scratch / "naive.pt"), "0.1"], scratch / "naive.pt"),
        "cp target": (["cp", str(beats), str(scratch / "cp.pt")], scratch / "cp.pt"),
    }, repeats)
    report(res, "surgeon merge", "naive (load both, torch.save)", "cp target")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
