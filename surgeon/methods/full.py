"""Full fine-tuning, for recipes: every backbone parameter trains except the frozen front end (the CNN
feature encoder of HuBERT / wav2vec 2.0, which the papers keep frozen)."""
from surgeon.methods.base import Method


class FullMethod(Method):
    name = "full"

    def apply(self, target, opts):
        return [n for n, _ in target.model.named_parameters()
                if not target.is_head(n) and not target.is_frontend(n) and "surgeon_" not in n]
