"""Issue 15 items 4-10 and 14: one vocabulary across commands, through the CLI as a user types it."""
from __future__ import annotations

import json


def test_version_prints_and_exits_zero(cli):
    from surgeon import __version__

    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"surgeon {__version__}"
