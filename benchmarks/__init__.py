"""Benchmarks: run each from the repository root as `python -m benchmarks.NAME` (or `bash dev.sh bench NAME`)."""
