"""Soft mixture of adapters (paper 000, eqs. 3-4): Phi (d, N, p), dispatch softmax over tokens, combine
softmax over the N*p slots; 14 experts of b = 1, 1 slot, Pfeiffer MHSA parallel by default."""
from surgeon.methods.adapter import AdapterMethod
from surgeon.methods.dense_moa import MOA_OPTIONS
from surgeon.methods.options import Opt


class SoftMoAMethod(AdapterMethod):
    name = "soft-moa"
    default_reduction = 768.0  # b = 1 at d = 768
    EXTRA = {
        **MOA_OPTIONS,
        "slots": Opt(1, "int", (), "slots p per expert"),
        "normalize": Opt(False, "bool", (), "l2-normalised logits with a learnable scale (Soft MoE's variant)"),
    }

    def build(self, target, opts, location):
        from surgeon.modules import ADAPTERS

        return ADAPTERS["soft-moa"](target.hidden_size, opts["num_experts"], opts["bottleneck"], slots=opts["slots"],
                                    expert=opts["expert"], kernel=opts["kernel"], normalize=opts["normalize"])
