"""The `surgeon` command line: parse, call the library, print.

Start-up stays light: this module and the command modules import only typer; each command imports
the library (and torch, where it must) inside its body. Errors: a SurgeonError becomes one line on
stderr and exit code 2; anything unexpected becomes one line and exit code 1; `--debug` (anywhere on
the line) shows the traceback instead.
"""
from __future__ import annotations

import os
import sys

import typer

from surgeon_cli.commands import compare as compare_cmd
from surgeon_cli.commands import convert as convert_cmd
from surgeon_cli.commands import demo as demo_cmd
from surgeon_cli.commands import eval_audioset as eval_audioset_cmd
from surgeon_cli.commands import export as export_cmd
from surgeon_cli.commands import inject as inject_cmd
from surgeon_cli.commands import inspect as inspect_cmd
from surgeon_cli.commands import merge as merge_cmd
from surgeon_cli.commands import models as models_cmd
from surgeon_cli.commands import train as train_cmd
from surgeon_cli.commands import select_layers as select_layers_cmd
from surgeon_cli.commands import sweep as sweep_cmd

app = typer.Typer(
    name="surgeon",
    help="Model surgery and merging for audio and speech transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    # an option callback runs while the line is parsed, before click asks for a command
    if value:
        from surgeon import __version__

        print(f"surgeon {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
):
    """Model surgery and merging for audio and speech transformers."""


# One line per command; each module holds its command's options and help.
app.command("demo")(demo_cmd.demo)
app.command("inject")(inject_cmd.inject)
app.command("strip")(inject_cmd.strip)
app.command("inspect")(inspect_cmd.inspect)
app.command("models")(models_cmd.models)
app.command("merge")(merge_cmd.merge)
app.command("merge-lora")(merge_cmd.merge_lora)
app.command("export")(export_cmd.export)
app.command("tiny")(models_cmd.tiny)
app.command("train")(train_cmd.train)
app.command("eval")(train_cmd.eval_)
app.command("eval-audioset")(eval_audioset_cmd.eval_audioset)
app.command("validate")(train_cmd.validate)
app.add_typer(train_cmd.recipes_app, name="recipes")
app.command("select-layers")(select_layers_cmd.select_layers)
app.command("compare")(compare_cmd.compare)
app.command("sweep")(sweep_cmd.sweep)
app.add_typer(convert_cmd.convert_app, name="convert")


def _fail(message: str, code: int) -> None:
    line = " ".join(str(message).split())
    if os.environ.get("SURGEON_ERROR_DIR"):  # a worker of `surgeon train --nproc`: its launcher prints it
        from surgeon.train.launch import report_worker_error

        if report_worker_error(line, code):
            sys.exit(code)
    print(f"surgeon: error: {line}", file=sys.stderr)
    sys.exit(code)


def _optional_value(argv: list[str], option: str, default: str) -> list[str]:
    """`--resume` may stand alone: give it its default value unless a value follows (auto, or an
    existing directory)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == option:
            nxt = out[i + 1] if i + 1 < len(out) else None
            if nxt is None or not (nxt == default or os.path.isdir(nxt)):
                out.insert(i + 1, default)
            break
    return out


def _is_usage_error(e: Exception) -> bool:
    # typer vendors click privately; its usage errors are recognised by their interface
    return hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)


def run(argv: list[str] | None = None) -> None:
    from surgeon.errors import SurgeonError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SURGEON_DEBUG") == "1"
    if "--debug" in argv:  # accepted anywhere, not only before the command
        argv.remove("--debug")
    argv = _optional_value(argv, "--resume", "auto")
    from surgeon.cards import record_command

    record_command(argv)  # the command line that model cards name
    try:
        result = app(args=argv, prog_name="surgeon", standalone_mode=False)
    except SurgeonError as e:
        if debug:
            raise
        _fail(str(e), e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("surgeon: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if debug:
            raise
        from surgeon.io.atomic import WRITE_ERRNOS

        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            # a full disk, a quota, a read-only place: the user's to fix, named by its path
            _fail(f"{e.filename if e.filename is not None else 'writing the output'}: {e.strerror or e}", 2)
        if _is_usage_error(e):  # unknown option, bad value, missing argument
            message = e.format_message()
            if not message:  # bare `surgeon`: the help was printed
                sys.exit(0 if not argv else 2)
            known = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
            command = next((a for a in argv if not a.startswith("-")), "")
            see = f"surgeon {command} --help" if command in known else "surgeon --help"
            _fail(f"{message} (see '{see}')", 2)
        _fail(f"internal error: {e.__class__.__name__}: {e} (rerun with --debug for the traceback)", 1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    run()
