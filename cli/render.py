"""Small formatting helpers shared by commands (no heavy imports)."""
from __future__ import annotations

import json
import sys


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def print_json(doc) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def console():
    from rich.console import Console

    out = Console(highlight=False)
    # piped output has no width to fit: do not fold long tensor names at 80 columns
    return out if out.is_terminal else Console(highlight=False, width=200)
