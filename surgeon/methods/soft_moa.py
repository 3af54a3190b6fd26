"""Soft mixture of adapters (paper 000, eqs. 3-4): Phi (d, N, p), dispatch softmax over tokens, combine
softmax over the N*p slots; 14 experts of b = 1, 1 slot, Pfeiffer MHSA parallel by default (Houlsby:
7 per block, see dense_moa.py)."""
from surgeon.methods.dense_moa import MoAMethod


class SoftMoAMethod(MoAMethod):
    name = "soft-moa"
    def build(self, target, opts, location):
        from surgeon.modules import ADAPTERS

        return ADAPTERS["soft-moa"](target.hidden_size, opts["num_experts"], opts["bottleneck"], slots=opts["slots"],
                                    expert=opts["expert"], kernel=opts["kernel"], normalize=opts["normalize"],
                                    conv_init=opts["conv_init"] or "xavier")
