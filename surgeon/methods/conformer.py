"""Conformer adapter (paper 001): LN -> pointwise d -> 2b -> GLU -> depthwise conv k -> BatchNorm ->
Swish -> pointwise b -> d; RR 96 (b = 8 at d = 768), k = 31."""
from surgeon.methods.adapter import AdapterMethod


class ConformerMethod(AdapterMethod):
    name = "conformer"
    default_reduction = 96.0

    def build(self, target, opts, location):
        from surgeon.modules import ADAPTERS

        return ADAPTERS["conformer"](target.hidden_size, opts["bottleneck"], kernel=opts["kernel"])
