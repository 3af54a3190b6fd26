"""Tasks: what the training loop needs to know about the kind of prediction a model makes.

The loop is task-agnostic; everything task-specific sits behind this small protocol, and `TASKS`
maps the recipe's `model.task` name to its class, as a lazy (module, class) entry: `"ctc"` lives in
surgeon.speech, which imports this module, and is loaded only when asked for. A new task is one class
and one table entry; which transformers class a family uses for it is the family's record
(`Family.tasks` in surgeon.anatomy).

    class Task(Protocol):
        name: str
        metrics: tuple[str, ...]          # metric names evaluate() returns ("loss" always included)
        higher_is_better: dict[str, bool] # per metric, for best-epoch selection
        def model_class(self, family: str, model_type: str | None = None) -> str | None
            # transformers class to load a checkpoint with for this task (None: the config's own);
            # model_type: the checkpoint's, when it is a type read through the family's layout
        def prepare(self, model, labels: list[str]) -> None
            # make the head fit the dataset: e.g. a new classifier when the class count differs
        def forward(self, model, batch) -> Tensor
            # model outputs (logits) for a collated batch (see surgeon.data.collate)
        def loss(self, outputs, batch) -> Tensor
            # scalar training loss
        def new_tally(self, num_labels: int) -> Tally
            # an accumulator: tally.add(outputs, batch, loss); tally.result() -> {metric: value}

Batches are dicts from `surgeon.data.collate`: input_values, labels, optional attention_mask,
keys, text. Metric values are plain floats (accuracy and macro-F1 as fractions in [0, 1]).
"""
from __future__ import annotations

from typing import Protocol

import torch

from surgeon.errors import SurgeonError


class Tally(Protocol):
    def add(self, outputs, batch, loss: float) -> None: ...

    def result(self) -> dict[str, float]: ...

    def merge(self, other) -> None: ...  # add another process's tally (sharded evaluation)

    def state_dict(self) -> dict: ...  # JSON-able, for resumable checkpoints

    def load_state_dict(self, state: dict) -> None: ...


class Task(Protocol):
    name: str
    metrics: tuple[str, ...]
    higher_is_better: dict[str, bool]

    def model_class(self, family: str, model_type: str | None = None) -> str | None: ...

    def prepare(self, model, labels: list[str]) -> None: ...

    def forward(self, model, batch): ...

    def loss(self, outputs, batch): ...

    def new_tally(self, num_labels: int) -> Tally: ...


# -- classification ------------------------------------------------------------------------------

class ConfusionTally:
    """Accuracy, macro-F1 and mean loss from a running confusion matrix."""

    def __init__(self, num_labels: int):
        self.confusion = torch.zeros(num_labels, num_labels, dtype=torch.long)
        self.loss_sum = 0.0
        self.count = 0

    def add(self, outputs, batch, loss: float) -> None:
        pred = outputs.argmax(dim=-1).cpu()
        labels = batch["labels"].cpu()
        self.confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
        self.loss_sum += float(loss) * len(labels)
        self.count += len(labels)

    def merge(self, other: "ConfusionTally") -> None:
        self.confusion += other.confusion
        self.loss_sum += other.loss_sum
        self.count += other.count

    def state_dict(self) -> dict:
        return {"confusion": self.confusion.tolist(), "loss_sum": self.loss_sum, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.confusion = torch.tensor(state["confusion"], dtype=torch.long)
        self.loss_sum, self.count = state["loss_sum"], state["count"]

    def result(self) -> dict[str, float]:
        c = self.confusion.double()
        total = c.sum().item()
        correct = c.diag().sum().item()
        tp = c.diag()
        precision = tp / c.sum(0).clamp(min=1)
        recall = tp / c.sum(1).clamp(min=1)
        f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
        present = c.sum(1) > 0  # macro average over the classes that occur in this split
        return {
            "accuracy": correct / total if total else 0.0,
            "macro_f1": f1[present].mean().item() if present.any() else 0.0,
            "loss": self.loss_sum / self.count if self.count else 0.0,
        }


class ClassificationTask:
    """Single-label classification with cross-entropy (all papers' benchmarks)."""

    name = "classification"
    metrics = ("accuracy", "macro_f1", "loss")
    higher_is_better = {"accuracy": True, "macro_f1": True, "loss": False}
    # modality -> transformers' Auto class, for model types read through another family's layout
    AUTO = {"audio": "AutoModelForAudioClassification", "speech": "AutoModelForAudioClassification",
            "image": "AutoModelForImageClassification", "text": "AutoModelForSequenceClassification"}

    def model_class(self, family: str, model_type: str | None = None) -> str | None:
        return model_class_of(family, self, model_type)

    def prepare(self, model, labels: list[str]) -> None:
        """A fresh final Linear in every label head whose output size differs from the number of
        classes (DeiT's distilled models average two heads)."""
        from surgeon.hf import family_of_model

        n = len(labels)
        heads = [h for h in (_final_linear(model, (name,)) for name in family_of_model(model).label_heads) if h]
        if not heads and hasattr(model, "add_label_head"):  # a model of surgeon's own without one (BEATs)
            model.add_label_head(n)
            heads = [h for h in (_final_linear(model, (name,)) for name in family_of_model(model).label_heads) if h]
        if not heads:
            raise SurgeonError(f"model: {type(model).__name__} has no classification head to train")
        for parent, attr, linear in heads:
            if linear.out_features != n:
                new = torch.nn.Linear(linear.in_features, n, bias=linear.bias is not None)
                setattr(parent, attr, new.to(linear.weight.device, linear.weight.dtype))
        model.config.num_labels = n
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {name: i for i, name in enumerate(labels)}

    def forward(self, model, batch):
        from surgeon.frontends import model_inputs, unwrap
        from surgeon.hf import family_of_model

        return model(**model_inputs(model, family_of_model(unwrap(model)), batch)).logits

    def loss(self, outputs, batch):
        # a mixup batch carries soft targets (class probabilities): the soft-target cross-entropy
        return torch.nn.functional.cross_entropy(outputs.float(), batch.get("targets", batch["labels"]))

    def new_tally(self, num_labels: int) -> ConfusionTally:
        return ConfusionTally(num_labels)


def _final_linear(model, heads: tuple[str, ...]):
    """(parent module, attribute, Linear) of the last Linear inside the first head module present."""
    for name in heads:
        module = getattr(model, name, None)
        if module is None:
            continue
        if isinstance(module, torch.nn.Linear):
            return model, name, module
        found = None
        for path, sub in module.named_modules():
            if isinstance(sub, torch.nn.Linear):
                found = path
        if found is not None:
            parent_path, _, attr = found.rpartition(".")
            parent = module.get_submodule(parent_path) if parent_path else module
            return parent, attr, getattr(parent, attr)
    return None


def model_class_of(family: str, task, model_type: str | None = None) -> str | None:
    """The transformers class of `family` for `task` (None: the checkpoint's own architecture); for a
    model type the family only shares a layout with (CamemBERT as RoBERTa), the task's Auto class."""
    from surgeon.anatomy import FAMILIES

    fam = FAMILIES.get(family)
    if fam is None:
        return None
    if model_type is not None and model_type not in fam.model_types:
        return task.AUTO.get(fam.modality) if task.name in fam.tasks else None
    return fam.tasks.get(task.name)


def families_with(task: str) -> list[str]:
    from surgeon.anatomy import FAMILIES

    return [name for name, fam in FAMILIES.items() if task in fam.tasks]


# model.task -> (module, class); instances are made on first use and kept (a task binds state, such as
# the CTC vocabulary, in prepare)
TASKS: dict[str, tuple[str, str]] = {
    "classification": ("surgeon.train.tasks", "ClassificationTask"),
    "ctc": ("surgeon.speech.ctc_task", "CTCTask"),
}
_INSTANCES: dict[str, Task] = {}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise SurgeonError(f"model.task: {name!r} is not available here (known: {', '.join(TASKS)})")
    if name not in _INSTANCES:
        from importlib import import_module

        module, cls = TASKS[name]
        _INSTANCES[name] = getattr(import_module(module), cls)()
    return _INSTANCES[name]
