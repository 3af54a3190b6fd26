"""The options several commands share, declared once: the same flag, the same words, the same parsing.

A command takes one with `option("force")` (its default, or `...` for a required one, may differ);
a few words of its own may follow the shared help (`more=`). tests/test_cli_vocabulary.py checks that
every command spelling one of these flags uses this table. Light: typer only.
"""
from __future__ import annotations

from dataclasses import dataclass

import typer


@dataclass(frozen=True)
class Shared:
    flags: tuple[str, ...]
    help: str
    metavar: str | None = None


SHARED = {
    "out": Shared(("--out", "-o"), "Output path."),
    "json": Shared(("--json",), "Print one JSON object (for scripts and CI)."),
    "force": Shared(("--force",), "Replace an existing output."),
    "dry_run": Shared(("--dry-run",), "Print what would be done; write nothing."),
    "dtype": Shared(("--dtype",), "Dtype of the written float tensors: float32, float16 or bfloat16 "
                                 "(default: as the model has them).", "DTYPE"),
    "shard_size": Shared(("--shard-size",), "Largest weights file written: 500MB, 2GB, 1GiB or bytes (default "
                                            "5GiB); a larger model is split into shards with an "
                                            "index.", "SIZE"),
    "allow_pickle": Shared(("--allow-pickle",), "Read pickled checkpoints (torch.load weights_only=True)."),
    "seed": Shared(("--seed",), "Random seed."),
}


def option(name: str, default=None, more: str = "", **kwargs):
    """The typer option `name` of SHARED, with this command's default and a few words of its own."""
    s = SHARED[name]
    text = f"{s.help} {more}".strip()
    return typer.Option(default, *s.flags, help=text, metavar=s.metavar, **kwargs)


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | None, flag: str = "--shard-size") -> int | None:
    """'500MB' -> 500_000_000, '1GiB' -> 2**30, '1234' -> 1234 bytes (transformers' units)."""
    import re

    from surgeon.errors import SurgeonError

    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise SurgeonError(f"{flag}: {text!r} is not a size; write 500MB, 2GB, 1GiB or a number of bytes")
    size = int(float(m.group(1)) * _UNITS[unit])
    if size < 1:
        raise SurgeonError(f"{flag}: {text!r} is not a positive size")
    return size


DTYPES = ("float32", "float16", "bfloat16")


def check_dtype(dtype: str | None) -> str | None:
    from surgeon.errors import SurgeonError, did_you_mean

    if dtype is not None and dtype not in DTYPES:
        raise SurgeonError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}{did_you_mean(dtype, DTYPES)}")
    return dtype
