"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

EXPERT_CMAP = "viridis"  # every map of expert contributions, so one colour reads the same everywhere


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, **options) -> Path:
    fig.savefig(out, dpi=110, **options)
    _plt().close(fig)
    return out


def curves(history: list[dict], out: Path, title: str, selected: int | None = None) -> Path:
    """Loss (train, valid) and accuracy (train, valid) per epoch; a dashed line marks the selected epoch."""
    return _save(curves_figure(history, title, selected), out)


def curves_figure(history: list[dict], title: str, selected: int | None = None):
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("train_loss", "train"), ("valid_loss", "valid")):
        if any(key in h for h in history):
            ax_loss.plot(epochs, [h.get(key) for h in history], marker="o", label=label)
    # the right panel shows the task's main metric: accuracy (classification) or CER/WER (ctc)
    metric = next((m for m in ("accuracy", "cer", "wer") if any(f"valid_{m}" in h for h in history)), None)
    for key, label in ((f"train_{metric}", "train"), (f"valid_{metric}", "valid")):
        if metric and any(key in h for h in history):
            ax_acc.plot(epochs, [h.get(key) for h in history], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel=metric or "-", title=metric or "no metric")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        if selected is not None:
            ax.axvline(selected, color="0.4", linestyle="--", linewidth=1, label=f"selected (epoch {selected})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def expert_layers(experts: dict, out: Path, title: str) -> Path:
    """Paper 000 Fig. 2 (right): each expert's contribution to the output tokens, per layer."""
    return _save(expert_layers_figure(experts, title), out)


def expert_layers_figure(experts: dict, title: str):
    plt = _plt()
    import numpy as np

    data = np.array(experts["per_layer"])
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * data.shape[1], 1.0 + 0.4 * data.shape[0]))
    im = ax.imshow(data, cmap=EXPERT_CMAP, aspect="auto")
    ax.set_yticks(range(len(experts["layers"])), experts["layers"])
    ax.set_xticks(range(data.shape[1]), [str(i + 1) for i in range(data.shape[1])])
    ax.set(xlabel="expert (adapter)", title=title)
    fig.colorbar(im, ax=ax, label="contribution")
    fig.tight_layout()
    return fig


def expert_classes(experts: dict, labels: list[str], out: Path, title: str) -> Path:
    """Paper 000 Fig. 3: each expert's mean contribution per class, one panel per layer."""
    return _save(expert_classes_figure(experts, labels, title), out, bbox_inches="tight")


def expert_classes_figure(experts: dict, labels: list[str], title: str):
    plt = _plt()
    import numpy as np

    panels = experts["per_class"]
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    n_classes = len(labels)
    n_experts = len(panels[0][0])
    fig, axes = plt.subplots(rows, cols, squeeze=False, layout="constrained",
                             figsize=(cols * (1.5 + 0.35 * n_experts), 0.6 + rows * (1.0 + 0.22 * min(n_classes, 50))))
    vmax = max(float(np.max(p)) for p in panels)
    for ax, panel, name in zip(axes.flat, panels, experts["layers"]):
        im = ax.imshow(np.array(panel), cmap=EXPERT_CMAP, aspect="auto", vmin=0, vmax=vmax)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(n_experts), [str(i + 1) for i in range(n_experts)], fontsize=7)
        if n_classes <= 40:
            ax.set_yticks(range(n_classes), labels, fontsize=7)
        ax.set_xlabel("expert", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, label="mean contribution per class")
    fig.suptitle(title)
    return fig
