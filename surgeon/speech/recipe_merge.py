"""A recipe's `[merge]` table (paper 003), called by surgeon.train.model.apply_merge before training.

    [merge]
    source = "bert"        # the model whose attention is merged in
    learnable = true       # Learnable-MAM (eq. 3); false: static MAM (eqs. 1-2)
    init_lam = 0.1         # lam of every merged layer (the starting value when learnable),
                           # or one per merged layer: [0.1, 0.2, 0.3]
    layers = [12, 13, 14]  # or "all"; or layers_from = "selection.json" (from select-layers)
    bias = true            # merge the q/k/v biases too (false: weights only)

A per-layer init_lam follows the order of `layers` when they are listed, ascending layer order
otherwise (`"all"`, `layers_from`).

Static (learnable = false): the q/k/v weights and biases become lam * W_source + (1 - lam) * W_target
in memory by the seam's in-memory runner, with the combine function of `surgeon merge` (a float32 lerp
from the nearer end, a multiply then an add: bit for bit the tensors of the file runner and of
Learnable-MAM at init_lam), and training proceeds on plain weights: no hooks.

Learnable: surgeon.speech.learnable_mam.apply; the returned hooks log lam per layer after every
optimiser step and every epoch (metrics.jsonl, key "lam" on the "step" and "epoch" lines) and, when the cell ends, bake lam into plain weights, write them with the
target's tokenizer files and a model card to <run>/checkpoints/<cell>/merged (loads with transformers), plot lam per
step to <run>/checkpoints/<cell>/lam.png, and put the learned lam per layer into the cell's test
results as "lam_layer_<i>".
"""
from __future__ import annotations

import shutil
from pathlib import Path

from surgeon.errors import SurgeonError

TOKENIZER_FILES = ("vocab.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "preprocessor_config.json")


def apply(model, section, offline_model: str | None = None):
    """offline_model="tiny" (validation without the checkpoints): a source that cannot be found is
    replaced by a tiny model of its family with the model's shape, as the model itself was."""
    from surgeon.methods.target import Target

    layers, lam = layer_plan(section, Target(model).num_layers)  # any family's config keys (BEATs' encoder_layers)
    source = section.source
    if offline_model:
        source = _stand_in(source, model)
    if section.learnable:
        from surgeon.speech import learnable_mam

        learnable_mam.apply(model, source, layers=layers, init_lam=lam, bias=section.bias)
        return LearnableHooks(model, source=str(source), bias=section.bias)
    static_merge(model, source, layers=layers, lam=lam, bias=section.bias)
    return None


def layer_plan(section, num_layers: int) -> tuple[list[int], dict[int, float]]:
    """The merged layers (ascending) and init_lam of each, from layers / layers_from / init_lam."""
    from surgeon.merging.layers import layer_list, read_layers_file

    if section.layers_from:
        listed = read_layers_file(section.layers_from, num_layers)  # ascending
    else:
        listed = layer_list(section.layers, num_layers, "merge.layers") if section.layers == "all" else list(section.layers)
        layer_list(listed, num_layers, "merge.layers")  # range check
    lam = section.init_lam
    if not isinstance(lam, list):
        return sorted(listed), {i: float(lam) for i in listed}
    if len(lam) != len(listed):
        where = f"merge.layers_from {section.layers_from}" if section.layers_from else "merge.layers"
        raise SurgeonError(f"merge.init_lam: {len(lam)} values for {len(listed)} merged layers ({where})")
    return sorted(listed), dict(zip(listed, map(float, lam)))


def _stand_in(source: str, model) -> str:
    import atexit
    import tempfile

    from surgeon.refs import ALIASES, resolve
    from surgeon.tiny import save_tiny

    try:
        resolve(source)
        return source
    except SurgeonError:
        if source not in ALIASES:
            raise
    from surgeon.anatomy import FAMILIES
    from surgeon.hf import family_of_model

    # the model's dimensions, written with the source family's config keys (BEATs' differ from ViT's)
    dims = family_of_model(model).dims(model.config.to_dict())
    keys = FAMILIES[ALIASES[source].family].config_keys
    out = Path(tempfile.mkdtemp(prefix="surgeon-stand-in-")) / "model"
    atexit.register(shutil.rmtree, out.parent, True)
    save_tiny(ALIASES[source].family, out, **{keys[d]: v for d, v in dims.items() if isinstance(keys.get(d), str)})
    return str(out)


def static_merge(model, source, *, layers="all", lam=0.1, bias: bool = True) -> list[int]:
    """MAM in memory: the seam's in-memory runner (surgeon.merging.mam.merge_in_memory), the combine
    function `surgeon merge` uses, float32 then the model's dtype. lam: one value, a list (one per
    chosen layer, ascending) or {layer: value}; bias=False leaves the biases untouched. Returns the
    merged layers."""
    from surgeon.merging.mam import merge_in_memory

    pairs = merge_in_memory(model, source, layers=layers, lam=lam, bias=bias)
    return sorted({p.layer for p in pairs})


class LearnableHooks:
    """What the training loop calls for a Learnable-MAM run (see surgeon.train.loop / runs)."""

    def __init__(self, model, source: str | None = None, bias: bool = True):
        from surgeon.speech import learnable_mam

        self.model, self.source, self.bias = model, source, bias
        self.history = [learnable_mam.lams(model)]  # entry 0: the initial lam
        self.steps: list[tuple[int, dict]] = []  # (optimiser step, lam per layer) after every step

    def log(self) -> dict:
        """Called after every epoch: lam per layer for metrics.jsonl (and the plot)."""
        from surgeon.speech import learnable_mam

        current = learnable_mam.lams(self.model)
        self.history.append(current)
        return {"lam": {str(i): v for i, v in current.items()}}

    def step_log(self, step: int) -> dict:
        """Called after every optimiser step: lam per layer for the step's metrics.jsonl line."""
        from surgeon.speech import learnable_mam

        current = learnable_mam.lams(self.model)
        self.steps.append((step, current))
        return {"lam": {str(i): v for i, v in current.items()}}

    def finish(self, model, folder) -> dict[str, float]:
        from surgeon.speech import learnable_mam

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        final = learnable_mam.bake(model)
        write_plain(model, folder / "merged")
        self.write_card(folder / "merged", final)
        plot_lams(self.history, folder / "lam.png", self.steps)
        return {f"lam_layer_{i}": v for i, v in final.items()}

    def write_card(self, out: Path, final: dict[int, float]) -> None:
        """README.md of merged/: what it was merged from and the lam each layer learnt."""
        from surgeon import cards

        if (out / "surgery.json").is_file():  # a PETL method is in it: save_surgery wrote its own card
            return
        target = getattr(self.model, "name_or_path", "") or type(self.model).__name__
        start = self.history[0]
        learnt = ", ".join(f"{i}: {start[i]:.4g} -> {v:.4g}" for i, v in final.items())
        cards.write_card(out, cards.model_card(
            f"{Path(str(target)).name} with attention merged by Learnable-MAM from {self.source or 'a source'}",
            [f"target: {target}", f"source: {self.source}",
             f"merged q, k, v{' (weights and biases)' if self.bias else ' (weights only)'} as "
             "W = lam_i * W_source + (1 - lam_i) * W_target, lam_i learnt per layer during fine-tuning",
             f"lam per layer (initial -> learnt): {learnt}"],
            summary="Learnable-MAM (paper 003 eq. 3), baked into plain weights: a plain transformers model; "
                    "the fine-tuned run's checkpoint and metrics are in the folder above."))


def write_plain(model, out: Path) -> None:
    """save_pretrained plus the target's tokenizer / feature-extractor files."""
    from surgeon.surgery_keys import method_of_key

    extra = [k for k in model.state_dict() if method_of_key(k)]
    if extra:  # a PETL method is injected as well: surgeon's own full save keeps it
        from surgeon.api import save_surgery

        save_surgery(model, out, full=True)
    else:
        model.save_pretrained(out)
    where = Path(getattr(model, "name_or_path", "") or "")
    for name in TOKENIZER_FILES:
        if where.is_dir() and (where / name).is_file():
            shutil.copy2(where / name, out / name)


def plot_lams(history: list[dict], path: Path, steps: list[tuple[int, dict]] | None = None) -> None:
    """lam per layer against the optimiser step (`steps`, from step 0 = init), else per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for layer in sorted(history[0]):
        if steps:
            xs = [0] + [s for s, _ in steps]
            ax.plot(xs, [history[0][layer]] + [v[layer] for _, v in steps], label=f"layer {layer}")
        else:
            ax.plot(range(len(history)), [h[layer] for h in history], marker="o", label=f"layer {layer}")
    ax.set_xlabel("optimiser step (0 = init)" if steps else "epoch (0 = init)")
    ax.set_ylabel("lam")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Learnable-MAM interpolation per layer")
    if len(history[0]) <= 12:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
