"""Convpass adapter: Linear -> QuickGELU -> conv over tokens (1-D k = 3 as the papers count it, or the
2-D grid form with --conv 2d) -> QuickGELU -> Linear; RR 64. The conv starts Xavier-uniform
(--conv-init xavier, the papers' code) or as zeros plus the identity on its centre tap (identity)."""
from surgeon.methods.adapter import AdapterMethod


class ConvpassMethod(AdapterMethod):
    name = "convpass"

    def check(self, target, opts):
        if opts["conv"] == "2d":
            target.layout()  # refuses models without a patch grid

    def build(self, target, opts, location):
        from surgeon.modules import ADAPTERS

        module = ADAPTERS["convpass"](target.hidden_size, opts["bottleneck"], kernel=opts["kernel"], conv=opts["conv"],
                                     conv_init=opts["conv_init"])
        if opts["conv"] == "2d":
            module.layout = target.layout()
        return module
