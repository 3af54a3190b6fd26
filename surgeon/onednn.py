"""Keep bf16 work on the CPU off oneDNN's AMX matmul kernels, which can put NaN into correct outputs.

oneDNN 3.12 (inside torch 2.14) multiplies bf16 matrices on CPUs with AMX (Intel Sapphire Rapids and
newer) with a kernel that, when K > 32 and K % 32 != 0, loads the K tail of A past its last valid
column (bytes of the next row, or past the end of the buffer) and relies on B's zero padding to cancel
them: NaN * 0 is NaN, so whatever non-finite bits lie there leak into rows that should be clean
(oneDNN issue 5717, fixed by its pull request 5723). Training shapes hit it all the time (50 labels, 50
tokens, batch x tokens = 28 or 100 for the weight gradients), and the garbage differs from run to run:
bf16 autocast training then gives a NaN loss on some runs only. Capping oneDNN below AMX keeps the
AVX-512 BF16 dot-product kernels (native bf16, fp32 accumulation), which handle the tail correctly.

The cap is oneDNN's own setting (ONEDNN_MAX_CPU_ISA); it is read once, at oneDNN's first use in the
process, so `cap_amx()` runs on import of `surgeon.train` and of the benchmarks, before any kernel. A
value the user set wins. It does nothing on CPUs without AMX, and nothing on GPUs' own kernels.
"""
from __future__ import annotations

import os
import re

VARIABLE = "ONEDNN_MAX_CPU_ISA"
CAP = "AVX512_CORE_BF16"  # the highest ISA below AMX that keeps native bf16
FIXED = (3, 15)  # first oneDNN release with the K-tail fix (PR 5723 is after v3.14.0)


def onednn_version(config: str) -> tuple[int, ...] | None:
    """The oneDNN (MKL-DNN) version in torch's build summary, e.g. (3, 12, 0); None when absent."""
    m = re.search(r"(?:MKL-DNN|oneDNN)\s+v(\d+)\.(\d+)(?:\.(\d+))?", config)
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


def cap_amx() -> str | None:
    """Set ONEDNN_MAX_CPU_ISA to AVX512_CORE_BF16 unless set or not needed; returns the value in force."""
    if VARIABLE in os.environ:
        return os.environ[VARIABLE]
    import torch

    version = onednn_version(torch.__config__.show())
    if version is not None and version[:2] < FIXED:
        os.environ[VARIABLE] = CAP
    return os.environ.get(VARIABLE)
