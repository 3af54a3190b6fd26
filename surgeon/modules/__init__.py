"""Adapter modules of the PETL papers, one nn.Module per file, registered by method name.

Every module maps x [B, T, d] to the adapter's own output [B, T, d] (no residual: placement, residual
and parallel/sequential insertion are the framework's job, surgeon/methods), and `reset_parameters()`
zero-initialises the up side only, so a freshly injected adapter outputs exactly zero while its down
side stays random. Modules that convolve over the patch grid read it from `module.layout`
(a TokenLayout). Importing this package imports torch.
"""
from surgeon.modules.bottleneck import Bottleneck
from surgeon.modules.conformer import ConformerAdapter
from surgeon.modules.convpass import Convpass
from surgeon.modules.layout import TokenLayout
from surgeon.modules.loaa import LookAsideAdapter
from surgeon.modules.moa import DenseMoA, SoftMoA

ADAPTERS = {
    "bottleneck": Bottleneck,
    "convpass": Convpass,
    "conformer": ConformerAdapter,
    "loaa": LookAsideAdapter,
    "dense-moa": DenseMoA,
    "soft-moa": SoftMoA,
}

__all__ = ["ADAPTERS", "Bottleneck", "Convpass", "ConformerAdapter", "LookAsideAdapter", "DenseMoA", "SoftMoA",
           "TokenLayout"]
