"""Expert contributions of Dense/Soft-MoA adapters over an evaluation set (paper 000 Sec. 3.3).

Every MoA module keeps `last_expert_weights` [B, N] after its forward: each expert's share of the
output for each sample. The recorder hooks every such module, and per evaluation batch adds the
shares up per module (Fig. 2 right: contribution per layer) and per class (Fig. 3: per class, the
mean over that class's samples, so a row need not sum to one across layers).
"""
from __future__ import annotations

import re

import torch


def moa_modules(model) -> list[tuple[str, torch.nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "last_expert_weights")]


def short_name(path: str) -> str:
    """'audio_spectrogram_transformer.layers.3.attention.surgeon_soft_moa' -> 'layer 3 (attention)'."""
    m = re.search(r"\.(\d+)\.(.+)$", path)
    if not m:
        return path
    where = m[2].split(".surgeon_")[0].split(".")[0]
    return f"layer {m[1]}" + (f" ({where})" if where and not where.startswith("surgeon_") else "")


class ExpertRecorder:
    def __init__(self, model, num_labels: int):
        self.modules = moa_modules(model)
        self.names = [short_name(n) for n, _ in self.modules]
        self.num_labels = num_labels
        self.per_layer: list[torch.Tensor] = []
        self.per_class: list[torch.Tensor] = []
        self.class_counts = torch.zeros(num_labels)
        self.samples = 0

    def __bool__(self) -> bool:
        return bool(self.modules)

    def add(self, labels: torch.Tensor) -> None:
        """After a forward pass on a batch with these labels."""
        labels = labels.cpu()
        labeled = bool(len(labels)) and int(labels.min()) >= 0  # transcription items carry -1
        for i, (_, module) in enumerate(self.modules):
            w = module.last_expert_weights
            if w is None:
                continue
            w = w.detach().float().cpu()
            if len(self.per_layer) <= i:
                self.per_layer.append(torch.zeros(w.shape[1]))
                self.per_class.append(torch.zeros(self.num_labels, w.shape[1]))
            self.per_layer[i] += w.sum(0)
            if labeled:
                self.per_class[i].index_add_(0, labels, w)
        self.samples += len(labels)
        if labeled:
            self.class_counts += torch.bincount(labels, minlength=self.num_labels).float()

    def merge(self, other: "ExpertRecorder") -> None:
        """Add another process's counts (sharded evaluation)."""
        for i, (pl, pc) in enumerate(zip(other.per_layer, other.per_class)):
            if len(self.per_layer) <= i:
                self.per_layer.append(torch.zeros_like(pl))
                self.per_class.append(torch.zeros_like(pc))
            self.per_layer[i] += pl
            self.per_class[i] += pc
        self.samples += other.samples
        self.class_counts += other.class_counts

    def gather(self, runtime) -> None:
        """Sum every process's counts into this recorder, in rank order (the same sums everywhere)."""
        parts = runtime.gather(self)
        total = parts[0]
        for other in parts[1:]:
            total.merge(other)
        self.__dict__.update(total.__getstate__())

    def __getstate__(self):  # gathered between processes: the counts, not the model's modules
        return {k: v for k, v in self.__dict__.items() if k != "modules"}

    def __setstate__(self, state):
        self.__dict__.update(state, modules=[])

    def result(self) -> dict | None:
        """{"layers": names, "per_layer": [[share per expert] per layer], "per_class": [[[...]]]}"""
        if not self.per_layer:
            return None
        total = max(self.samples, 1)
        out = {"layers": self.names[: len(self.per_layer)], "per_layer": [(pl / total).tolist() for pl in self.per_layer]}
        if self.num_labels and self.class_counts.sum() > 0:
            out["per_class"] = [(pc / self.class_counts.clamp(min=1)[:, None]).tolist() for pc in self.per_class]
        return out
