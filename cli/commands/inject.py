"""`surgeon inject METHOD` (add a parameter-efficient method) and `surgeon strip` (remove it)."""
from __future__ import annotations

import inspect
from typing import Optional

import typer

from surgeon_cli.options import option

from surgeon_cli.render import console, print_json

METHOD_PANEL = "Method options (each method takes some: see docs/petl.md)"


def inject(**given):
    """Inject a parameter-efficient method into a model and save it (the adapter only, unless --full)."""
    from surgeon.api import load, save_surgery
    from surgeon.errors import SurgeonError
    from surgeon.methods import get_method
    from surgeon.methods.surgery import apply_method
    from surgeon.methods.tables import all_options
    from surgeon.refs import resolve
    from surgeon_cli.options import check_dtype, parse_size

    method, model, out, base, full = (given[k] for k in ("method", "model", "out", "base", "full"))
    force, as_json = given["force"], given["as_json"]
    size, dtype = parse_size(given["shard_size"]), check_dtype(given["dtype"])
    if not full and (size is not None or dtype is not None):
        raise SurgeonError("--shard-size and --dtype apply to --full, which writes the whole model; without it "
                           "only the adapter is written")
    # only options given on the command line are passed on, so each method's own defaults (from the
    # papers) apply to the rest; one the method does not take is named as the user typed it
    options = {name: given[name] for name in all_options() if given.get(name) is not None}
    declared = get_method(method).OPTIONS  # unknown method: refused before anything is loaded
    for name in options:
        if name not in declared:
            takes = ", ".join(flag(n) for n in declared) or "no options"
            raise SurgeonError(f"{flag(name)}: {get_method(method).name} does not take this option; it takes: {takes}")
    model_path = resolve(model)
    from surgeon.io.atomic import check_output

    check_output(out, force=force, inputs=[model_path])
    net = load(model_path, base=base, allow_pickle=given["allow_pickle"])
    entry = apply_method(net, method, options)
    save_surgery(net, out, full=full, force=force, inputs=[model_path], shard_size=size, dtype=dtype)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    doc = {
        "method": entry["method"],
        "options": entry["options"],
        "added_parameters": entry["num_parameters"],
        "petl_parameters": entry["petl_parameters"],
        "trainable_parameters": trainable,
        **get_method(method).summary(entry["options"]),  # the MoAs: experts per block and per layer
        "out": str(out),
        "full": full,
    }
    if as_json:
        print_json(doc)
        return
    from surgeon.api import print_trainable_parameters

    con = console()
    print_trainable_parameters(net, con)
    con.print(f"wrote {'model' if full else 'adapter'} with {entry['method']} to {out}")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _method_parameters() -> list[inspect.Parameter]:
    """One CLI option per method option of surgeon.methods.tables (the single declaration)."""
    from surgeon.methods.tables import all_options, merged_help, who

    params = []
    for name, entries in all_options().items():
        opt = entries[0][1]
        if opt.kind == "bool":
            decl, kind = opt.flags or f"{flag(name)}/--no-{flag(name)[2:]}", Optional[bool]
        else:
            decl, kind = flag(name), {"int": Optional[int], "float": Optional[float]}.get(opt.kind, Optional[str])
        text = merged_help(entries)
        choices = f"; one of {', '.join(map(str, opt.choices))}" if opt.choices else ""
        help_ = f"{text[0].upper()}{text[1:]}{choices} ({who(m for m, _ in entries)})."
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                        default=typer.Option(None, decl, help=help_, rich_help_panel=METHOD_PANEL)))
    return params


def _fixed_parameters() -> list[inspect.Parameter]:
    k = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("method", k, annotation=str, default=typer.Argument(
            ..., help="bottleneck, convpass, conformer, loaa, dense-moa, soft-moa, lora, prefix, prompt, bitfit, "
                      "linear or full.")),
        inspect.Parameter("model", k, annotation=str, default=typer.Option(
            ..., "--model", "-m", help="Model directory, alias, Hub id, or a surgery directory.")),
        inspect.Parameter("out", k, annotation=str, default=option("out", ...)),
        inspect.Parameter("base", k, annotation=Optional[str], default=typer.Option(
            None, "--base", help="Base model of a surgery directory given as --model.")),
        inspect.Parameter("full", k, annotation=bool, default=typer.Option(
            False, "--full", help="Save the whole model, not only the adapter. Load it with surgeon.load: "
            "transformers' from_pretrained drops the injected modules (UNEXPECTED keys); for a plain model use "
            "'surgeon export DIR --as model'.")),
        inspect.Parameter("shard_size", k, annotation=Optional[str], default=option("shard_size", more="With --full.")),
        inspect.Parameter("dtype", k, annotation=Optional[str], default=option("dtype", more="With --full.")),
        inspect.Parameter("allow_pickle", k, annotation=bool, default=option("allow_pickle", False)),
        inspect.Parameter("as_json", k, annotation=bool, default=option("json", False)),
        inspect.Parameter("force", k, annotation=bool, default=option("force", False)),
    ]


inject.__signature__ = inspect.Signature([*_fixed_parameters(), *_method_parameters()])


def strip(
    model: str = typer.Argument(..., help="A surgery directory (adapter only or --full)."),
    out: str = option("out", ..., more="(the base model)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model of an adapter-only directory."),
    shard_size: Optional[str] = option("shard_size"),
    dtype: Optional[str] = option("dtype"),
    as_json: bool = option("json", False),
    force: bool = option("force", False),
    allow_pickle: bool = option(
        "allow_pickle", False, more="A pickled base (an authors' BEATs .pt) is given back as that file."),
):
    """Remove every injected method and write the base model."""
    from surgeon.api import strip_to

    from surgeon_cli.options import check_dtype, parse_size

    path = strip_to(model, out, base=base, force=force, shard_size=parse_size(shard_size), dtype=check_dtype(dtype),
                    allow_pickle=allow_pickle)
    if as_json:
        print_json({"out": str(path)})
        return
    console().print(f"wrote the stripped model to {path}")
