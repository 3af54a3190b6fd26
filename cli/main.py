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

from surgeon_cli.commands import inspect as inspect_cmd
from surgeon_cli.commands import models as models_cmd

app = typer.Typer(
    name="surgeon",
    help="Model surgery and merging for audio and speech transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
):
    """Model surgery and merging for audio and speech transformers."""
    if version:
        from surgeon import __version__

        print(f"surgeon {__version__}")
        raise typer.Exit(0)


# One line per command; each module holds its command's options and help.
app.command("inspect")(inspect_cmd.inspect)
app.command("models")(models_cmd.models)
app.command("tiny")(models_cmd.tiny)


def _fail(message: str, code: int) -> None:
    print(f"surgeon: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def run(argv: list[str] | None = None) -> None:
    import click

    from surgeon.errors import SurgeonError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SURGEON_DEBUG") == "1"
    if "--debug" in argv:  # accepted anywhere, not only before the command
        argv.remove("--debug")
    try:
        result = app(args=argv, prog_name="surgeon", standalone_mode=False)
    except SurgeonError as e:
        if debug:
            raise
        _fail(str(e), e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("surgeon: interrupted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as e:  # usage errors: unknown option, bad value, missing argument
        if debug:
            raise
        _fail(f"{e.format_message()} (see 'surgeon {' '.join(a for a in argv[:1] if not a.startswith('-'))} --help')", e.exit_code)
    except Exception as e:
        if debug:
            raise
        _fail(f"internal error: {e.__class__.__name__}: {e} (rerun with --debug for the traceback)", 1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    run()
