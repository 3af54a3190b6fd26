"""Look-Aside Adapter (paper 004): projections are convolutions along time (1x3), frequency (3x1) or
both (3x3) of the patch grid; parallel, r = 36 at d = 768 (RR 64/3).

Defaults are the paper's: its best placement, Attn(T) + FFN(F) (Houlsby, time on MHSA, frequency on
FFN; a Pfeiffer adapter takes its sub-layer's axis of that pair), and its parameter counts: no conv
biases and no backbone LayerNorm trained (2 k d r per adapter; --bias and --train-norm add them).

The grid must be made of non-overlapping patches, so that grid neighbours are spectrogram
neighbours: a model whose patch stride is smaller than its patch (AST: stride 10, patch 16) is
refused unless --repatch, which sets the strides to the patch size and interpolates the position
embeddings to the new grid (repatch.py). --axis takes one axis for every adapter, or two separated
by a comma for Houlsby's MHSA and FFN adapters.
"""
from surgeon.errors import SurgeonError
from surgeon.methods.adapter import AdapterMethod
from surgeon.methods.placement import locations

AXES = ("time", "frequency", "grid")
BEST_AXIS = {"mhsa": "time", "ffn": "frequency"}  # paper 004 Table 3: Attn(T) + FFN(F)


class LoAAMethod(AdapterMethod):
    name = "loaa"
    default_reduction = 64 / 3
    default_placement = "houlsby"
    default_train_norm = False  # paper 004 trains no backbone LayerNorm
    # what a record written before an option existed meant (surgeon.load): LoAA saves from before the
    # paper's counts had conv biases and trained the adapted sub-layers' LayerNorms
    RECORDED_BEFORE = {"bias": True, "train_norm": True}

    def resolve(self, target, options):
        opts = super().resolve(target, options)
        if opts["axis"] is None:
            opts["axis"] = ",".join(BEST_AXIS[loc] for loc in locations(opts))
        axes = [a.strip() for a in opts["axis"].split(",")]
        if len(axes) not in (1, 2) or any(a not in AXES for a in axes):
            raise SurgeonError(f"loaa: option axis must be time, frequency, grid or two of them separated by a "
                               f"comma, got {opts['axis']!r}")
        return opts

    def check(self, target, opts):
        target.grid_axes()  # refuses models without a patch grid
        if target.overlapping() and not opts["repatch"]:
            (_, fp, fs), (_, tp, ts) = target.grid_axes()
            raise SurgeonError(
                f"loaa: the model's patches overlap (patch {fp}x{tp}, stride {fs}x{ts}), so grid neighbours are not "
                "spectrogram neighbours; pass --repatch to use non-overlapping patches (stride = patch size)")

    def axis_for(self, opts, location):
        axes = [a.strip() for a in opts["axis"].split(",")]
        return axes[0] if len(axes) == 1 or location == "mhsa" else axes[1]

    def prepare(self, target, opts):
        if opts["repatch"] and target.overlapping():
            from surgeon.methods.repatch import repatch

            repatch(target)

    def undo(self, target):
        from surgeon.methods.repatch import undo_repatch

        undo_repatch(target)

    def build(self, target, opts, location):
        from surgeon.modules import ADAPTERS

        module = ADAPTERS["loaa"](target.hidden_size, opts["bottleneck"], axis=self.axis_for(opts, location),
                                  kernel=opts["kernel"], bias=opts["bias"])
        module.layout = target.layout()
        return module
