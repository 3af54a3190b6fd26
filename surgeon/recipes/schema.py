"""The recipe schema: one TOML file describes a training job completely.

Every table is a pydantic model with ``extra="forbid"``, so a misspelt key is an error (with a
did-you-mean) rather than a silently ignored setting. Choices are names (a method, a dataset format,
a task); a recipe never names a Python object to import.

Defaults follow the papers' training set-up (petl-facts.md): AdamW with betas 0.9/0.98, eps 1e-6,
weight decay 0.1, cosine decay stepped per batch, no warm-up, and a learning rate per method family.
Importing this module is cheap (pydantic only): `surgeon validate` and the CLI use it before torch.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, StrictBool, Tag, field_validator,
                      model_validator)

from surgeon.anatomy import FAMILIES
from surgeon.errors import did_you_mean

# The PETL methods of `surgeon inject` (issue 3). Kept here as names so validation needs no torch;
# tests/test_recipe_schema.py checks the list against surgeon.methods when it is installed.
METHODS = (
    "full", "linear", "bitfit", "lora", "prefix", "prompt",
    "bottleneck", "convpass", "conformer", "loaa", "dense-moa", "soft-moa",
)

# Default learning rate of the trainable groups per method (papers 000-002; petl-facts.md).
DEFAULT_LR = {
    "full": 5e-5,
    "linear": 1e-3,
    "prompt": 1e-2,
    "prefix": 1e-2,
}
ADAPTER_LR = 5e-3  # adapters, LoRA, BitFit, MoA
GROUPS = ("method", "backbone", "head")


def default_lr(method: str) -> float:
    return DEFAULT_LR.get(method, ADAPTER_LR)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelSection(Section):
    ref: Optional[str] = Field(None, description="Model directory, Hub id or alias (ast, wav2vec2, ...).")
    task: Literal["classification", "ctc"] = "classification"
    tiny: Optional[Literal[tuple(FAMILIES)]] = Field(
        None, description="Build a tiny random model of this family from its config (offline).")
    config: dict[str, Union[int, float, bool, str]] = Field(
        default_factory=dict, description="Config overrides of a model built here (tiny, imagenet-vit).")
    surgery: Optional[str] = Field(None, description="Start from a saved surgery (an `inject --out` directory).")
    init: Literal["pretrained", "imagenet-vit"] = Field(
        "pretrained", description="imagenet-vit: an AST initialised from the ViT or DeiT named in `vit_ref` (paper 004).")
    vit_ref: Optional[str] = None
    allow_pickle: bool = Field(
        False, description="ref may be a pickle (an authors' BEATs .pt), read with torch.load(weights_only=True).")
    head: Optional[Literal["mean", "pooled"]] = Field(
        None, description="Classification head: mean (the PETL papers': a Linear over the mean of the output "
                          "sequence after the final LayerNorm, which trains) or pooled (transformers'); "
                          "default: the model's own (pooled, or what a saved surgery was trained with).")

    @model_validator(mode="after")
    def _one_source(self):
        if self.head == "mean" and self.task != "classification":
            raise ValueError("head: 'mean' is a classification head; remove it for task = " + repr(self.task))
        sources = [n for n in ("ref", "tiny", "surgery") if getattr(self, n)]
        if self.init == "imagenet-vit":
            if self.ref or self.surgery:
                raise ValueError("init: 'imagenet-vit' builds the AST from vit_ref; remove ref / surgery")
            return self._vit_checked()
        if not sources:
            raise ValueError("ref: required (or tiny, or surgery)")
        if len(sources) > 1:
            raise ValueError(f"{sources[1]}: give only one of ref, tiny or surgery")
        if self.config and not self.tiny:
            raise ValueError("config: overrides apply to a tiny model or an imagenet-vit AST only")
        return self

    def _vit_checked(self):
        if not (self.vit_ref or self.tiny):
            raise ValueError("vit_ref: init = 'imagenet-vit' needs the ImageNet ViT checkpoint (or tiny = 'vit')")
        if self.tiny not in (None, "vit"):
            raise ValueError("tiny: init = 'imagenet-vit' starts from a ViT; use tiny = 'vit'")
        return self


class _MethodBase(Section):
    """`[method]`: the name plus the options of `surgeon inject` (snake_case), built from the methods'
    option tables (surgeon.methods.tables), which declare them once."""

    name: str

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in METHODS:
            hint = did_you_mean(v, METHODS) or f" (known: {', '.join(METHODS)})"
            raise ValueError(f"unknown method {v!r}{hint}")
        return v

    def options(self) -> dict:
        """The options given in the recipe (unset ones take the method's paper defaults)."""
        return {k: v for k, v in self.model_dump(exclude={"name"}).items() if v is not None}


def _method_field(entries):
    """The schema field of one method option: its type, choices and bounds, from its Opt (the first
    method declaring it; tests/test_cli_vocabulary.py checks that all agree)."""
    from surgeon.methods.tables import merged_help

    opt = entries[0][1]
    base = {"int": int, "float": float, "bool": bool, "str": str}.get(opt.kind)
    if opt.kind == "list":
        kind = list[Literal[opt.choices]] if opt.choices else list[str]
    elif opt.kind == "str" and opt.choices:
        kind = Literal[opt.choices]
    else:
        kind = base
    bounds = {k: v for k, v in (("ge", opt.ge), ("gt", opt.gt), ("pattern", opt.pattern)) if v is not None}
    return (Optional[kind], Field(None, description=merged_help(entries), **bounds))


def _method_section():
    from pydantic import create_model

    from surgeon.methods.tables import all_options

    fields = {name: _method_field(entries) for name, entries in all_options().items()}
    return create_model("MethodSection", __base__=_MethodBase, __module__=__name__, **fields)


MethodSection = _method_section()


class FewShot(Section):
    k: int = Field(..., ge=1, description="Training examples per class.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)


class SpecAugment(Section):
    freq_mask: int = Field(24, ge=0)
    time_mask: int = Field(80, ge=0)


class Mixup(Section):
    """`[data.mixup]`: training items mixed with another random training item, labels mixed alike
    (AST's recipes: probability 0.6, lambda ~ Beta(10, 10), waveforms mixed before the fbank)."""

    probability: float = Field(..., ge=0, le=1, description="Share of training items that are mixed.")
    alpha: float = Field(10.0, ge=0, description="lambda ~ Beta(alpha, alpha); 0 mixes nothing.")
    mix: Literal["waveform", "features"] = Field(
        "waveform", description="Mix the waveforms (then compute the features, as AST does) or the cached features.")


class DataSection(Section):
    format: str = Field(..., description="esc50, urbansound8k, speechcommands, fluent, iemocap, csv, folder, synthetic")
    root: Optional[str] = None
    options: dict[str, Union[int, float, bool, str, list]] = Field(
        default_factory=dict, description="Reader options (synthetic: num_classes, per_class, seconds, seed).")
    protocol: Optional[Literal["official", "kfold", "kfold-rest", "leave-one-out"]] = None
    fold: Optional[int] = Field(None, ge=1, description="Run only this fold (1-based).")
    valid_from_train: float = Field(0.1, gt=0, lt=1)
    few_shot: Optional[FewShot] = None
    sample_rate: Optional[int] = Field(None, gt=0, description="Default: the model's (16 kHz).")
    max_frames: Optional[int] = Field(None, ge=16)
    max_seconds: Optional[float] = Field(None, gt=0)
    features: Literal["auto", "fbank", "waveform", "logmel"] = "auto"
    specaugment: Optional[SpecAugment] = None
    on_error: Literal["raise", "skip"] = "raise"
    mixup: Optional[Mixup] = None
    cache: bool = True
    cache_dir: Optional[str] = Field(None, description="Feature cache; default $SURGEON_CACHE or ~/.cache/surgeon/features.")

    @model_validator(mode="after")
    def _root_needed(self):
        if self.root is None and self.format != "synthetic":
            raise ValueError(f"root: required for format {self.format!r}")
        return self


class LearningRates(Section):
    method: Optional[float] = Field(None, gt=0)
    backbone: Optional[float] = Field(None, gt=0)
    head: Optional[float] = Field(None, gt=0)


class TrainSection(Section):
    optimizer: Literal["adamw"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    lr: Union[float, LearningRates] = Field(
        default_factory=LearningRates, description="One rate for every group, or a table per group.")
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    epochs: int = Field(..., ge=1)
    batch_size: int = Field(..., ge=1)
    grad_accum: int = Field(1, ge=1)
    clip: Optional[float] = Field(None, gt=0, description="Max gradient norm.")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy, torch and Python's RNGs all take it.")
    seeds: Optional[list[Annotated[int, Field(ge=0, le=2**32 - 1)]]] = Field(
        None, min_length=1,
        description="Train one cell per seed (results give mean and std over them); default: [seed]. "
                    "seed still seeds the split.")
    workers: int = Field(0, ge=0)
    prefetch: int = Field(2, ge=1, description="Batches each data worker loads ahead (workers > 0).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tf32: bool = Field(True, description="TensorFloat-32 matmuls on GPUs that have them (fp32 runs).")
    attention: Literal["sdpa", "eager"] = Field("sdpa", description="PyTorch scaled-dot-product attention or the "
                                                "model's eager attention.")
    compile: bool = Field(False, description="torch.compile the model (slower start, faster steps on GPUs).")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many optimiser steps (the cosine "
                                     "schedule ends there too); the epoch in progress is validated.")
    patience: Optional[int] = Field(None, ge=1, description="Stop when eval.select has not improved on validation "
                                    "for this many epochs.")

    @field_validator("lr", mode="before")
    @classmethod
    def _lr_number(cls, v):
        if isinstance(v, bool) or not isinstance(v, (int, float, dict, LearningRates)):
            raise ValueError(f"expected a number or a table of method/backbone/head rates (got {v!r})")
        if isinstance(v, (int, float)) and v <= 0:
            raise ValueError(f"must be positive (got {v!r})")
        return float(v) if isinstance(v, int) else v

    def group_lrs(self, method: str) -> dict[str, float]:
        """Learning rate of each parameter group (method, backbone, head)."""
        if isinstance(self.lr, float):
            return {g: self.lr for g in GROUPS}
        base = default_lr(method)
        return {g: getattr(self.lr, g) or base for g in GROUPS}


class EvalSection(Section):
    metrics: Optional[list[Literal["accuracy", "macro_f1", "loss", "wer", "cer"]]] = Field(
        None, description="Metrics to report; default: all of the task's.")
    checkpoint: Literal["best", "last"] = "best"
    select: Literal["accuracy", "macro_f1", "loss", "wer", "cer"] = Field(
        "accuracy", description="Validation metric that picks the best epoch.")
    batch_size: Optional[int] = Field(None, ge=1)


class CheckpointSection(Section):
    """`[checkpoint]`: resumable training state (surgeon train --resume)."""

    every_steps: int = Field(500, ge=0, description="Also checkpoint every N optimiser steps (0: epoch ends only).")
    keep: int = Field(2, ge=1, description="Checkpoints kept per cell (the newest).")


class LaunchSection(Section):
    """`[launch]`: processes and nodes (torch's elastic launcher); the command line's --nproc etc. win."""

    nproc: int = Field(1, ge=1, description="Processes per node (GPUs per node; CPU processes use gloo).")
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    master_addr: str = "127.0.0.1"
    master_port: Optional[int] = Field(None, ge=1, le=65535, description="Default: a free port (one node), 29500.")

    @model_validator(mode="after")
    def _rank_in_range(self):
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank: {self.node_rank} is not below nnodes ({self.nnodes})")
        return self


LOGGERS = ("jsonl", "tensorboard", "csv")


class LogSection(Section):
    """`[log]`: where the training metrics go besides metrics.jsonl (always written)."""

    to: list[Literal["jsonl", "tensorboard", "csv"]] = Field(
        default_factory=lambda: ["jsonl"], description="jsonl (always), tensorboard (pip install "
        "'surgeon[tensorboard]'): <run>/tensorboard/<cell>/, csv: <run>/metrics-<event>.csv.")


class OutputSection(Section):
    dir: Optional[str] = Field(None, description="Run directory; default runs/<recipe name>.")
    plots: bool = True


class MergeSection(Section):
    """Attention merging (paper 003) before training; implemented by surgeon.speech (issue 6)."""

    source: str
    learnable: bool = False
    init_lam: Union[float, list[float]] = Field(
        0.1, description="One value, or one per merged layer (in the order of `layers`; ascending otherwise).")
    layers: Union[Literal["all"], list[int]] = "all"
    layers_from: Optional[str] = Field(
        None, description="A layer selection JSON (`surgeon select-layers`); instead of `layers`.")
    bias: StrictBool = Field(True, description="Merge the q/k/v biases too (false: like `surgeon merge --no-bias`).")

    @field_validator("init_lam")
    @classmethod
    def _in_unit(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("needs at least one value")
        for x in v if isinstance(v, list) else [v]:
            if not 0 <= x <= 1:
                raise ValueError(f"{x} is outside [0, 1]")
        return v

    @model_validator(mode="after")
    def _layers(self):
        if self.layers_from and self.layers != "all":  # "all" is the default (a dumped recipe spells it out)
            raise ValueError("layers_from: give either layers or layers_from, not both")
        if isinstance(self.init_lam, list) and isinstance(self.layers, list):
            if len(set(self.layers)) != len(self.layers):
                raise ValueError("layers: a layer is listed twice (init_lam gives one value per listed layer)")
            if len(self.init_lam) != len(self.layers):
                raise ValueError(f"init_lam: {len(self.init_lam)} values for {len(self.layers)} layers "
                                 "(give one value, or one per layer in `layers`)")
        return self


class Recipe(Section):
    model: ModelSection
    # one [method] table, or several [[method]] tables injected in order (paper 002's combinations);
    # optional when model.surgery brings its methods
    method: Optional[Annotated[
        Union[Annotated[MethodSection, Tag("__one__")], Annotated[list[MethodSection], Tag("__many__")]],
        Discriminator(lambda v: "__many__" if isinstance(v, list) else "__one__"),
    ]] = None
    data: DataSection
    train: TrainSection
    eval: EvalSection = Field(default_factory=EvalSection)
    output: OutputSection = Field(default_factory=OutputSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    launch: LaunchSection = Field(default_factory=LaunchSection)
    log: LogSection = Field(default_factory=LogSection)
    merge: Optional[MergeSection] = None
    _source: object = PrivateAttr(None)  # the recipe file, for messages and the run directory

    @property
    def methods(self) -> list[MethodSection]:
        if self.method is None:
            return []
        return self.method if isinstance(self.method, list) else [self.method]

    @model_validator(mode="after")
    def _consistent(self):
        if self.method is None and not self.model.surgery:
            raise ValueError("method: required key is missing (or start from model.surgery)")
        if self.data.few_shot and self.train.seeds is not None:
            raise ValueError("train.seeds: a few-shot recipe takes its seeds from data.few_shot.seeds")
        if self.data.few_shot and self.data.protocol == "leave-one-out":
            raise ValueError("data.few_shot: cannot be combined with the leave-one-out protocol")
        if self.data.mixup is not None and self.model.task != "classification":
            raise ValueError("data.mixup: mixes class labels; the classification task only")
        if self.model.task == "ctc" and self.eval.select in ("accuracy", "macro_f1"):
            self.eval.select = "wer"
        return self


# -- error reporting -----------------------------------------------------------------------------

def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that holds the key at `loc` (for did-you-mean on unknown keys)."""
    model: type[BaseModel] | None = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):  # an element of a list of tables
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = _first_model(annotation)
    return model


def _first_model(annotation) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def format_errors(errors: list[dict]) -> list[str]:
    """pydantic errors -> ["dotted.path: problem", ...], unknown keys with a did-you-mean."""
    lines = []
    for err in errors:
        # drop pydantic's union-branch tags from the location: "method.__one__.name" -> "method.name"
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("__")))
        path = ".".join(str(p) for p in loc) or "recipe"
        if err["type"] == "extra_forbidden":
            holder = _model_at(loc)
            known = list(holder.model_fields) if holder else []
            hint = did_you_mean(loc[-1], known) if known else ""
            lines.append(f"{path}: unknown key{hint}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "value_error":
            import re

            m = re.match(r"^([\w.]+): (.*)$", msg)
            if m:  # a validator naming the key it is about
                lines.append(f"{path + '.' if path != 'recipe' else ''}{m[1]}: {m[2]}")
                continue
        if err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and err["type"] not in ("value_error",) and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        lines.append(f"{path}: {msg}")
    return list(dict.fromkeys(lines))  # a union type can report the same problem twice
