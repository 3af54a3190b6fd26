"""Linear probing: only the classification head trains; nothing is added or unfrozen."""
from surgeon.methods.base import Method


class LinearMethod(Method):
    name = "linear"
