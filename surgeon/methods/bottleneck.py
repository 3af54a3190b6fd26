"""Bottleneck adapter (Linear -> GELU -> Linear), RR 64 (b = 12 at d = 768), Pfeiffer MHSA parallel-before."""
from surgeon.methods.adapter import AdapterMethod


class BottleneckMethod(AdapterMethod):
    name = "bottleneck"

    def build(self, target, opts, location):
        from surgeon.modules import ADAPTERS

        return ADAPTERS["bottleneck"](target.hidden_size, opts["bottleneck"])
