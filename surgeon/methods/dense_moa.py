"""Dense mixture of adapters (paper 000, eqs. 1-2): N experts (bottleneck or convpass, width b) mixed by
a per-token softmax router; 14 experts of b = 1, Pfeiffer MHSA parallel by default.

`num_experts` counts the experts of one MoA block. A Houlsby placement has two blocks per layer (one
beside MHSA, one beside FFN), so its default is the paper's 7 per block, "14 adapters split equally
between MHSA and FFN" (paper 000, Table 2): 14 experts per layer either way.
"""
from surgeon.errors import SurgeonError
from surgeon.methods.adapter import AdapterMethod
from surgeon.methods import tables
from surgeon.methods.placement import locations

EXPERTS_PER_LAYER = 14  # paper 000: 14 experts per layer, in one block (Pfeiffer) or two of 7 (Houlsby)
MOA_OPTIONS = tables.MOA  # declared in surgeon.methods.tables


class MoAMethod(AdapterMethod):
    """What both mixtures share: the per-block expert count and the Convpass experts' options."""

    default_reduction = 768.0  # b = 1 at d = 768
    def check(self, target, opts):
        if opts["num_experts"] is None:
            opts["num_experts"] = EXPERTS_PER_LAYER // (2 if opts["placement"] == "houlsby" else 1)
        if opts["expert"] == "convpass":
            opts["conv_init"] = opts["conv_init"] or "xavier"
        elif opts["conv_init"] is not None:
            raise SurgeonError(f"{self.name}: option conv_init applies to convpass experts (--expert convpass)")

    def summary(self, opts):
        blocks = len(locations(opts))
        return {"experts_per_block": opts["num_experts"], "blocks_per_layer": blocks,
                "experts_per_layer": opts["num_experts"] * blocks}


class DenseMoAMethod(MoAMethod):
    name = "dense-moa"

    def build(self, target, opts, location):
        from surgeon.modules import ADAPTERS

        return ADAPTERS["dense-moa"](target.hidden_size, opts["num_experts"], opts["bottleneck"],
                                     expert=opts["expert"], kernel=opts["kernel"],
                                     conv_init=opts["conv_init"] or "xavier")
