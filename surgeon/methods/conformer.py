"""Conformer adapter (paper 001): LN -> pointwise d -> 2b -> GLU -> depthwise conv k -> BatchNorm ->
Swish -> pointwise b -> d; RR 96 (b = 8 at d = 768), k = 31."""
from surgeon.methods.adapter import AdapterMethod
from surgeon.methods.options import Opt


class ConformerMethod(AdapterMethod):
    name = "conformer"
    default_reduction = 96.0
    EXTRA = {"kernel": Opt(31, "int", (), "depthwise convolution kernel size")}

    def build(self, target, opts, location):
        from surgeon.modules import ADAPTERS

        return ADAPTERS["conformer"](target.hidden_size, opts["bottleneck"], kernel=opts["kernel"])
