"""Checkpoint input and output: safetensors headers, lazy reading, streaming atomic writing."""
