"""Shared fixtures: tiny models of every family, built from configs and saved with save_pretrained."""
from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# pytest-xdist: each worker gets its share of the cores (torch would start one thread per core in every
# worker, and the workers would fight over them) and its own feature cache (never the user's ~/.cache)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))
os.environ.setdefault("SURGEON_CACHE", tempfile.mkdtemp(prefix="surgeon-test-cache-"))

from surgeon.onednn import cap_amx  # noqa: E402

cap_amx()  # before any kernel runs in the test process: bf16 on AMX CPUs (surgeon/onednn.py)

MAX_WORKERS = 4  # every worker imports torch and builds its own session fixtures


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most MAX_WORKERS."""
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


FAMILIES = ("ast", "vit", "bert", "hubert", "wav2vec2")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """tiny_dir(family, **overrides) -> path of a saved tiny model (cached per arguments)."""
    from surgeon.tiny import save_tiny

    cache = {}

    def make(family: str, **overrides):
        key = (family, tuple(sorted(overrides.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"tiny-{family}") / "model"
            save_tiny(family, out, **overrides)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run many times faster on one thread than on two contended ones; modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


class CliResult:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def json(self):
        import json

        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """cli('inspect', path, '--json') -> CliResult(code, out, err), running the real entry point in-process."""
    from surgeon_cli.main import run

    def invoke(*args):
        capsys.readouterr()
        try:
            run([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke

