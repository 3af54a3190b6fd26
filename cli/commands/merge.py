"""`surgeon merge` (Multimodal Attention Merging), `surgeon merge-lora` (fold LoRA into the weights) and
`surgeon export lora` (surgeon LoRA -> PEFT adapter directory)."""
from __future__ import annotations

import os
from typing import Optional

import typer

from surgeon_cli.options import option, parse_size
from surgeon_cli.render import console, human_bytes, print_json



def _single_threaded_blas() -> None:
    """LoRA deltas are rank-r products of a few MFLOPs: BLAS threads only add synchronisation (10x
    slower on a busy machine). numpy's OpenBLAS reads this when numpy is first imported; torch (for
    --verify) keeps its own threads; a user's setting wins."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def merge(
    config: Optional[str] = typer.Argument(None, help="A TOML merge config (linear, task-arithmetic, ties, dare-*, slerp, mam); without it: MAM from the flags."),
    source: Optional[str] = typer.Option(None, "--source", help="Source model (text or image), or noise:source|noise:target|noise:normal."),
    target: Optional[str] = typer.Option(None, "--target", help="Target model (speech or audio); its architecture is kept."),
    lam: Optional[str] = typer.Option(None, "--lam", help="Interpolation factor in [0, 1]: one value, or a comma list per layer."),
    out: Optional[str] = option("out", more="A model directory (a .pt file for an authors' BEATs .pt target)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Target layers to merge: 12-19 or 0,3,5 (default: all)."),
    layers_from: Optional[str] = typer.Option(None, "--layers-from", help="JSON file with a `layers` list (from select-layers)."),
    layer_map: Optional[str] = typer.Option(None, "--layer-map", help="SOURCE:TARGET layer pairs, e.g. 0:0,1:2 (different layer counts)."),
    bias: bool = typer.Option(True, "--bias/--no-bias", help="Merge the q/k/v biases too."),
    roles: Optional[str] = typer.Option(None, "--roles", help="Roles to merge, e.g. q,k,v (MAM's default) or q,k,v,o; with a config: instead of its `roles`."),
    noise_from: Optional[str] = typer.Option(None, "--noise-from", help="With --source noise:source: the model whose statistics the noise copies."),
    noise_stats: str = typer.Option("model", "--noise-stats", help="Noise statistics: model (pooled over the model's q/k/v, the paper's reading) or tensor (per matrix)."),
    seed: int = option("seed", 0, more="Of the noise baselines."),
    dtype: Optional[str] = option("dtype"),
    shard_size: Optional[str] = option("shard_size"),
    dry_run: bool = option("dry_run", False, more="The plan, from the headers."),
    as_json: bool = option("json", False, more="The plan or the result."),
    force: bool = option("force", False),
    allow_pickle: bool = option("allow_pickle", False),
    fmt: Optional[str] = typer.Option(None, "--format", help="pt (an authors' BEATs .pt target's layout: its default) or safetensors (a model directory)."),
):
    """Multimodal Attention Merging: W = lam * W_source + (1 - lam) * W_target on q, k, v (paper 003);
    or, given a TOML config, a merge of several models of one family (linear, task-arithmetic, ties,
    dare-linear, dare-ties, slerp), or MAM itself (method = "mam")."""
    from surgeon.errors import SurgeonError
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.merging.plan import build_plan, open_source

    if out is None and not dry_run:
        raise SurgeonError("--out: missing (or pass --dry-run)")
    if config is not None:
        given = [flag for flag, value in (("--source", source), ("--target", target), ("--lam", lam), ("--layers", layers),
                 ("--layers-from", layers_from), ("--layer-map", layer_map), ("--noise-from", noise_from)) if value is not None]
        if given:
            raise SurgeonError(f"{given[0]}: a MAM flag; with a merge config, the config says what to merge")
        return _merge_config(config, out, dtype=dtype, dry_run=dry_run, as_json=as_json, force=force,
                             allow_pickle=allow_pickle, fmt=fmt, roles=roles, shard_size=shard_size)
    for flag, value in (("--source", source), ("--target", target), ("--lam", lam)):
        if value is None:
            raise SurgeonError(f"{flag}: missing (MAM needs --source, --target and --lam; or give a merge config)")
    tgt = Checkpoint.open(target, allow_pickle=allow_pickle)
    src = open_source(source, tgt, noise_from, allow_pickle, noise_stats)
    from surgeon.merging.config import parse_roles
    from surgeon.merging.pairs import ROLES

    chosen = parse_roles(roles) if roles is not None else ROLES
    plan = build_plan(tgt, src, lam, layers, layers_from, layer_map, bias, dtype, seed, roles=chosen)
    plan.shard_bytes = parse_size(shard_size)
    _finish_mam(plan, out, fmt, dry_run=dry_run, as_json=as_json, force=force)


def _finish_mam(plan, out, fmt, *, dry_run: bool, as_json: bool, force: bool) -> None:
    """Print or write a MAM plan (from the flags or from a config with method = "mam")."""
    from surgeon.beats.merge_output import output_format, run_beats_merge

    tgt = plan.target
    fmt = output_format(tgt, fmt)
    if plan.shard_bytes is not None and tgt.extras is not None and fmt == "pt":
        from surgeon.errors import SurgeonError

        raise SurgeonError("--shard-size: a .pt output is one file; --format safetensors writes a sharded directory")
    doc = plan.describe()
    if dry_run:
        print_json(doc) if as_json else _render_plan(doc)
        return
    from surgeon.merging.mam import run_merge

    if tgt.extras is not None:  # an authors' BEATs .pt: their layout again, or a BEATs model directory
        path = run_beats_merge(plan, out, fmt, force=force)
    else:
        path = run_merge(plan, out, force=force)
    if path.is_dir():
        _write_card(path, "merge_card", doc)
    if as_json:
        print_json({"out": str(path), **doc})
    else:
        print(f"merged {doc['num_merged']} tensors in {len(doc['layers'])} layers, copied {doc['num_copied']}: wrote {path}")


def _merge_config(path: str, out, *, dtype, dry_run: bool, as_json: bool, force: bool, allow_pickle: bool,
                  fmt: Optional[str] = None, roles: Optional[str] = None, shard_size: Optional[str] = None) -> None:
    from surgeon.errors import SurgeonError
    from surgeon.merging.config import load_config, parse_roles
    from surgeon.merging.multi import MultiPlan, build_multi_plan, run_multi

    config = load_config(path)
    if dtype is not None:  # --dtype overrides the config's
        config = config.model_copy(update={"dtype": dtype})
    if roles is not None:  # and --roles its roles
        config = config.model_copy(update={"roles": parse_roles(roles)})
    plan = build_multi_plan(config, allow_pickle=allow_pickle)
    plan.shard_bytes = parse_size(shard_size)
    if not isinstance(plan, MultiPlan):  # a method with its own plan: MAM
        return _finish_mam(plan, out, fmt, dry_run=dry_run, as_json=as_json, force=force)
    if fmt is not None:
        raise SurgeonError(f"--format: for a BEATs .pt target; {config.method} writes a model directory")
    doc = plan.describe()
    if dry_run:
        if as_json:
            print_json(doc)
            return
        out_ = console()
        out_.print(f"method   {doc['method']}" + (f" {doc['parameters']}" if doc["parameters"] else ""))
        if doc["base"]:
            out_.print(f"base     {doc['base']['ref']} ({doc['base']['family']})")
        for m in doc["models"]:
            out_.print(f"model    {m['ref']} ({m['family']}) weight {_value(m['weight'])} density {_value(m['density'])}")
        out_.print(f"roles    {', '.join(doc['roles']) if doc['roles'] else 'every tensor'}")
        out_.print(f"tensors  {doc['num_merged']} merged, {doc['num_copied']} copied"
                   + (f", written as {doc['dtype']}" if doc["dtype"] else ""))
        out_.print(f"output   {human_bytes(doc['output_bytes'])}")
        out_.print(f"memory   about {human_bytes(doc['peak_tensor_bytes'])} of tensors at a time (plus the Python runtime)")
        for key, values in doc.get("values", {}).items():  # per-layer or per-tensor settings
            out_.print(f"  [dim]{key}[/dim] " + " ".join(f"{k} {_value(v)}" for k, v in values.items()))
        return
    path_out = run_multi(plan, out, force=force)
    _write_card(path_out, "multi_card", doc)
    if as_json:
        print_json({"out": str(path_out), **doc})
    else:
        print(f"{doc['method']}: merged {doc['num_merged']} tensors of {len(doc['models'])} models, "
              f"copied {doc['num_copied']}: wrote {path_out}")


def _value(v) -> str:
    """A number, a list of numbers, or a setting as given, compactly."""
    if isinstance(v, (int, float)):
        return f"{v:g}"
    if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
        return "[" + ", ".join(f"{x:g}" for x in v) + "]"
    import json

    return json.dumps(v)


def _render_plan(doc: dict) -> None:
    src = doc["source"]
    lines = [
        f"source   {src['ref']}" + (f" ({src['family']})" if src["family"] else ""),
        f"target   {doc['target']['path']} ({doc['target']['family']}, {doc['target']['num_layers']} layers, "
        f"hidden {doc['target']['hidden_size']})",
        f"merge    {', '.join(doc['roles'])}" + (" weights and biases" if doc["bias"] else " weights"),
        "layers   " + ", ".join(
            f"{t}<-{doc['layer_map'][t]}@{lam:g}" if doc["layer_map"][t] != int(t) else f"{t}@{lam:g}"
            for t, lam in doc["lam"].items()
        ),
        f"tensors  {doc['num_merged']} merged, {doc['num_copied']} copied"
        + (f", written as {doc['dtype']}" if doc["dtype"] else ""),
        f"output   {human_bytes(doc['output_bytes'])}",
        f"memory   about {human_bytes(doc['peak_tensor_bytes'])} of tensors at a time (plus the Python runtime)",
    ]
    if src["noise"]:
        stats = f", {doc['noise_stats']} statistics" if doc.get("noise_stats") else ""
        lines.insert(1, f"noise    {src['noise']} (seed {doc['seed']}{stats})")
    lines += [f"note     {n}" for n in doc.get("notes", [])]
    out = console()
    for line in lines:
        out.print(line)
    for name in doc["merged_tensors"]:
        out.print(f"  [dim]{name}[/dim]")


def merge_lora(
    model: str = typer.Argument(..., help="Base model directory (or a surgeon --full output with its LoRA inside)."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="surgeon adapter dir (inject --out) or PEFT adapter dir."),
    out: Optional[str] = option("out", more="A model directory (a plain model, no LoRA left)."),
    dtype: Optional[str] = option("dtype"),
    shard_size: Optional[str] = option("shard_size"),
    verify: bool = typer.Option(False, "--verify/--no-verify", help="Run unmerged and merged on a probe input; print the max difference."),
    dry_run: bool = option("dry_run", False, more="Checks and prints what would be folded."),
    as_json: bool = option("json", False),
    force: bool = option("force", False),
    allow_pickle: bool = option("allow_pickle", False),
):
    """Fold LoRA into the base weights: W' = W + scaling * B @ A (surgeon or PEFT adapters)."""
    _single_threaded_blas()
    from surgeon.errors import SurgeonError
    from surgeon.io.checkpoint import Checkpoint
    from surgeon.merging.adapter import read_adapter, read_embedded
    from surgeon.merging.lora import build_fold, run_fold

    if out is None and not dry_run:
        raise SurgeonError("--out: missing (or pass --dry-run)")
    base = Checkpoint.open(model, allow_pickle=allow_pickle)
    if verify and not dry_run and (base.config is None or base.format == "pickle"):  # found out before writing
        raise SurgeonError(f"--verify: {model}: running the models needs a safetensors model directory with config.json")
    lora = read_adapter(adapter, allow_pickle) if adapter else read_embedded(base)
    plan = build_fold(base, lora, dtype)
    plan.shard_bytes = parse_size(shard_size)
    doc = plan.describe()
    if not dry_run:
        doc["out"] = str(run_fold(plan, out, force=force))
        _write_card(doc["out"], "fold_card", doc)
        if verify:
            from surgeon.merging.verify import check_fold

            doc.update(check_fold(plan, out))
    if as_json:
        print_json(doc)
        return
    verb = "would fold" if dry_run else "folded"
    print(f"{verb} {len(doc['folded'])} LoRA pairs" + (f" and {len(doc['replaced'])} full tensors" if doc["replaced"] else "")
          + (f": wrote {doc['out']}" if "out" in doc else f" ({human_bytes(doc['output_bytes'])} output)"))
    if "max_difference" in doc:
        print(f"verify: max |unmerged - merged| = {doc['max_difference']:.3g}")
        if doc["lora_effect"] == 0:  # nothing was checked: the merged model is the base
            print("verify: the adapter changes nothing on the probe input (every LoRA B is zero: untrained?), "
                  "so this shows nothing")


def _write_card(out, kind: str, doc: dict) -> None:
    """README.md model card (surgeon.cards), written after the model directory."""
    from surgeon import cards

    cards.write_card(out, getattr(cards, kind)(doc))


export_app = typer.Typer(help="Write surgeon outputs in other tools' formats.", no_args_is_help=True)


@export_app.command("lora")
def export_lora(
    model: str = typer.Argument(..., help="surgeon LoRA adapter dir (inject --out) or --full model dir."),
    format: str = typer.Option("peft", "--format", help="Output format: peft."),
    out: str = option("out", ..., more="An adapter directory."),
    force: bool = option("force", False),
):
    """Write surgeon's LoRA as a PEFT adapter directory (PeftModel.from_pretrained loads it)."""
    from surgeon.errors import SurgeonError
    from surgeon.merging.adapter import read_adapter
    from surgeon.merging.peft_format import write_peft

    if format != "peft":
        raise SurgeonError(f"--format: {format!r} is not supported; use peft")
    path = write_peft(read_adapter(model), out, force=force)
    print(f"wrote PEFT adapter to {path}")
