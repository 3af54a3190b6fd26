"""Soft mixture of adapters (paper 000, eqs. 3-4): Phi (d, N, p), dispatch softmax over tokens, combine
softmax over the N*p slots; 14 experts of b = 1, 1 slot, Pfeiffer MHSA parallel by default (Houlsby:
7 per block, see dense_moa.py)."""
from surgeon.methods.dense_moa import MOA_OPTIONS, MoAMethod
from surgeon.methods.options import Opt


class SoftMoAMethod(MoAMethod):
    name = "soft-moa"
    EXTRA = {
        **MOA_OPTIONS,
        "slots": Opt(1, "int", (), "slots p per expert"),
        "normalize": Opt(False, "bool", (), "l2-normalised logits with a learnable scale (Soft MoE's variant)"),
    }

    def build(self, target, opts, location):
        from surgeon.modules import ADAPTERS

        return ADAPTERS["soft-moa"](target.hidden_size, opts["num_experts"], opts["bottleneck"], slots=opts["slots"],
                                    expert=opts["expert"], kernel=opts["kernel"], normalize=opts["normalize"],
                                    conv_init=opts["conv_init"] or "xavier")
