"""Dense mixture of adapters (paper 000, eqs. 1-2): N experts (bottleneck or convpass, width b) mixed by
a per-token softmax router; 14 experts of b = 1, Pfeiffer MHSA parallel by default."""
from surgeon.methods.adapter import AdapterMethod
from surgeon.methods.options import Opt

MOA_OPTIONS = {
    "num_experts": Opt(14, "int", (), "number of experts N"),
    "expert": Opt("bottleneck", "str", ("bottleneck", "convpass"), "expert design"),
    "kernel": Opt(3, "int", (), "convpass experts' kernel size"),
}


class DenseMoAMethod(AdapterMethod):
    name = "dense-moa"
    default_reduction = 768.0  # b = 1 at d = 768
    EXTRA = MOA_OPTIONS

    def build(self, target, opts, location):
        from surgeon.modules import ADAPTERS

        return ADAPTERS["dense-moa"](target.hidden_size, opts["num_experts"], opts["bottleneck"],
                                     expert=opts["expert"], kernel=opts["kernel"])
