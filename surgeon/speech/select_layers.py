"""Choose the layers to merge from data (paper 003 section 4.1).

For paired samples (audio with its transcript) the target model hears the audio and the source model
reads the text (or hears the same audio when it is a speech or audio model too). An image source
(ViT, paper 003's audio event classification) sees row i of a second manifest of images
(`source_pairs`) paired with audio pair i. INPUTS maps each input modality to the way a batch of
items becomes model inputs: text (tokenizer), speech (waveform), audio (AST fbank), image (pixels).

Which pairs: the paper selects on 10% of the training set. `split` ("train" by default) keeps the
pairs of that split: LJ Speech and VCTK have no official split and get surgeon's fixed hash split
(the one training uses), a manifest its `split` column (or, without one, the same hash split);
"all" keeps every pair. `fraction` then draws a seeded random sample of that share (`seed`), and
`limit` keeps the first N of what remains, in file order.

Where the hidden states are taken (`at`, one tensor per layer and sample, averaged over the valid
positions, ignoring padding), in terms of the anatomy's roles:

  attention  "the output of each attention block" (the paper's words): the hidden state between a
             layer's attention and feed-forward sub-layers. Post-norm layers (BERT, HuBERT/wav2vec
             2.0 base: x -> LN(x + Attn(x)) -> LN(. + FFN(.))): the output of `attn_norm`, the
             attention's LayerNorm, i.e. what the feed-forward sub-layer reads. Pre-norm layers (ViT,
             AST, HuBERT large: x -> x + Attn(LN(x)) -> . + FFN(LN(.))): the input of `ffn_norm`,
             the residual stream after the attention's residual add. Read with forward hooks.
  layer      each layer's output after its feed-forward sub-layer (``hidden_states[1:]``).

Layer i of the source is then compared with layer i of the target over all samples:

  swd        sliced Wasserstein distance between the two point clouds (POT), lower = more similar
  euclidean  mean distance between the paired vectors, lower = more similar
  inner      mean inner product of the paired vectors, higher = more similar

Layers are ranked from most to least similar and the top k are chosen. The SWD is a Monte Carlo
estimate over `projections` random directions; its standard error per layer and the z-score of the
gap between the k-th and (k+1)-th ranked layers (paired over the same directions) are reported, so
a choice the noise could flip is visible. DEFAULT_PROJECTIONS is measured in
benchmarks/swd_projections.py (docs/speech.md).

Memory: batches stream through both models and only running sums leave a batch, except for the SWD,
which needs the whole point clouds. It keeps, whichever is smaller, each sample's projections onto
the directions (`ot.sliced_wasserstein_distance`'s for that seed; float64, with fewer directions than
half the hidden size) or the pooled vectors themselves (float32, as the model made them); the
distance is then computed in chunks of directions, each the one-dimensional Wasserstein distance of
the sorted projections, which is POT's own computation (and equals its result).
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from surgeon.errors import SurgeonError

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")
METRICS = {"swd": False, "euclidean": False, "inner": True}  # metric -> higher is more similar
AT = {  # where the hidden states are taken (see the module docstring)
    "attention": "between each layer's attention and feed-forward sub-layers (post-norm: attn_norm's output; "
                 "pre-norm: ffn_norm's input)",
    "layer": "each layer's output, after its feed-forward sub-layer",
}
SPLITS = ("train", "valid", "test", "all")
DEFAULT_PROJECTIONS = 5000  # measured: benchmarks/swd_projections.py, docs/speech.md
DIRECTION_CHUNK = 512  # directions projected at a time when computing the SWD


def ranking(scores: list[float], metric: str) -> list[int]:
    """Layer indices from most to least similar (ties: lower layer first)."""
    higher = METRICS[metric]
    return sorted(range(len(scores)), key=lambda i: (-scores[i] if higher else scores[i], i))


def choose(scores: list[float], metric: str, top_k: int) -> list[int]:
    return sorted(ranking(scores, metric)[:top_k])


# -- pooled layer outputs ------------------------------------------------------------------------


@dataclass
class Encoder:
    """One model with the way its input is prepared from a paired item (INPUTS[modality])."""

    ref: str
    model: object
    family: object
    modality: str  # a key of INPUTS: "text" | "speech" | "audio" | "image"
    tokenizer: object = None
    spec: object = None  # FeatureSpec for speech (waveform) and audio (fbank)
    image: dict = None  # image preprocessing settings (image_settings)
    # give the model the waveform attention mask and batch padded clips; models whose feature
    # encoder uses group norm (the base checkpoints) are trained without a mask and their output
    # depends on the padding, so they see one clip at a time instead
    pass_mask: bool = True
    at: str = "attention"  # a key of AT

    @property
    def num_layers(self) -> int:  # BEATs' config names it encoder_layers: the family's config_keys say
        key = self.family.config_keys.get("num_layers", "num_hidden_layers")
        return int(self.model.config.to_dict()[key])

    def tap(self, i: int) -> tuple[str, str]:
        """Module path and side ("input" / "output") where `at` reads layer i."""
        from surgeon.hf import layer_module_path

        if self.at == "layer":
            return layer_module_path(self.model, self.family, i), "output"
        role, side = attention_tap(self.family, self.model.config.to_dict())
        return layer_module_path(self.model, self.family, i, role), side

    def pooled(self, items) -> list:
        """[num_layers] tensors [batch, hidden]: each layer's state at `at`, averaged over its valid positions."""
        import torch

        if self.modality == "speech" and not self.pass_mask and len(items) > 1:
            # group-norm feature encoders normalise over the padded length: one item at a time
            per_item = [self.pooled([it]) for it in items]
            return [torch.cat(layer) for layer in zip(*per_item)]
        with torch.no_grad():
            kwargs, valid = INPUTS[self.modality](self, items)
            if self.at == "layer":
                states = self.model(**kwargs, output_hidden_states=True).hidden_states[1:]
            else:
                with _tapped(self) as states:
                    self.model(**kwargs)
            mask = valid(states[-1].shape[1])
            m = mask.unsqueeze(-1).to(states[0].dtype)
            denom = m.sum(1).clamp(min=1)
            return [(h * m).sum(1) / denom for h in states]


def attention_tap(family, config: dict) -> tuple[str, str]:
    """(role, side) of the state between attention and feed-forward: pre-norm layers read the input
    of the feed-forward's LayerNorm, post-norm layers the output of the attention's LayerNorm."""
    return ("ffn_norm", "input") if family.is_pre_norm(config) else ("attn_norm", "output")


class _tapped:
    """Forward hooks that collect each layer's tensor at enc.tap(i) during one forward pass; the
    context value is the list (filled in layer order), complete when the block ends."""

    def __init__(self, enc: Encoder):
        self.enc, self.found, self.handles, self.states = enc, {}, [], []

    def __enter__(self):
        for i in range(self.enc.num_layers):
            path, side = self.enc.tap(i)
            module = self.enc.model.get_submodule(path)
            if side == "input":
                hook = module.register_forward_pre_hook(lambda _m, args, i=i: self.found.__setitem__(i, args[0]))
            else:
                hook = module.register_forward_hook(lambda _m, _a, out, i=i: self.found.__setitem__(
                    i, out[0] if isinstance(out, tuple) else out))
            self.handles.append(hook)
        return self.states

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        if exc[0] is None:
            missing = [i for i in range(self.enc.num_layers) if i not in self.found]
            if missing:
                raise SurgeonError(f"{self.enc.ref}: --at {self.enc.at}: layer {missing[0]}'s "
                                   f"{self.enc.tap(missing[0])[0]} never ran")
            self.states.extend(self.found[i] for i in range(self.enc.num_layers))
        return False


# How a batch of items becomes the model's keyword arguments, and which output positions are real
# (a function of the output length -> [batch, length] mask). One entry per input modality.


def _text_inputs(enc: Encoder, items):
    batch = enc.tokenizer([it.text or "" for it in items], padding=True, truncation=True, return_tensors="pt")
    return dict(batch), lambda length: batch["attention_mask"]


def _waveform_inputs(enc: Encoder, items):
    import torch

    from surgeon.data.features import load_audio, waveform

    waves = [waveform(load_audio(it.path, enc.spec.sample_rate), enc.spec) for it in items]
    n = max(w.numel() for w in waves)
    wav = torch.zeros(len(waves), n)
    wav_mask = torch.zeros(len(waves), n, dtype=torch.long)
    for i, w in enumerate(waves):
        wav[i, : w.numel()] = w
        wav_mask[i, : w.numel()] = 1

    if hasattr(enc.model, "token_padding_mask"):
        # BEATs: its own sample -> token mask (True = padding), "strict": a token touching padding is
        # dropped, so a clip's kept states are those of the clip alone, whatever it is batched with
        # (the authors' mode keeps partly padded tokens, whose states depend on the padding)
        def valid(frames):
            return (~enc.model.token_padding_mask(wav_mask == 0, "strict")).long()

        kwargs = dict(input_values=wav, attention_mask=wav_mask, mask_mode="strict")
        return kwargs, valid

    def valid(frames):
        lengths = enc.model._get_feat_extract_output_lengths(wav_mask.sum(-1)).clamp(max=frames)
        return (torch.arange(frames)[None, :] < lengths[:, None]).long()

    return dict(input_values=wav, attention_mask=wav_mask if enc.pass_mask else None), valid


def _all_positions(batch: int):
    import torch

    return lambda length: torch.ones(batch, length, dtype=torch.long)


def _fbank_inputs(enc: Encoder, items):
    """AST: the fixed-length log-mel fbank it is trained on (padded to max_length frames, as in
    training, so every token counts: CLS, distillation and patch tokens)."""
    import torch

    from surgeon.data.features import fbank, load_audio

    feats = torch.stack([fbank(load_audio(it.path, enc.spec.sample_rate), enc.spec) for it in items])
    return dict(input_values=feats), _all_positions(len(items))


def _image_inputs(enc: Encoder, items):
    """ViT: each item's image (item.path), preprocessed as image_settings says; CLS + patch tokens."""
    import torch

    pixels = torch.stack([load_image(it.path, enc.image) for it in items])
    return dict(pixel_values=pixels), _all_positions(len(items))


INPUTS = {"text": _text_inputs, "speech": _waveform_inputs, "audio": _fbank_inputs, "image": _image_inputs}
AUDIO_MODALITIES = ("speech", "audio")  # what a target may be: it hears the paired audio


def image_settings(config: dict, preprocessor: dict) -> dict:
    """The image preprocessing of a ViT checkpoint: its preprocessor_config.json settings (resize,
    rescale, normalise) where present, else resize to config.image_size (bilinear), scale to [0, 1]
    and normalise with mean 0.5 / std 0.5 (the ViT checkpoints' own values)."""
    size = int(config.get("image_size", 224))
    size_of = preprocessor.get("size", {"height": size, "width": size})
    if isinstance(size_of, int):
        size_of = {"height": size_of, "width": size_of}
    if "height" not in size_of:  # {"shortest_edge": n}: a square of that side
        side = int(size_of.get("shortest_edge", size))
        size_of = {"height": side, "width": side}
    channels = int(config.get("num_channels", 3))

    def per_channel(v):
        return [float(v)] * channels if isinstance(v, (int, float)) else [float(x) for x in v]

    return {
        "do_resize": bool(preprocessor.get("do_resize", True)),
        "size": (int(size_of["height"]), int(size_of["width"])),
        "resample": int(preprocessor.get("resample", 2)),  # PIL code; 2 = bilinear
        "do_rescale": bool(preprocessor.get("do_rescale", True)),
        "rescale_factor": float(preprocessor.get("rescale_factor", 1 / 255)),
        "do_normalize": bool(preprocessor.get("do_normalize", True)),
        "image_mean": per_channel(preprocessor.get("image_mean", 0.5)),
        "image_std": per_channel(preprocessor.get("image_std", 0.5)),
        "mode": "RGB" if channels == 3 else "L",
    }


def load_image(path, settings: dict):
    """One image file -> float32 tensor [channels, height, width], preprocessed per `settings`."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise SurgeonError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im = im.convert(settings["mode"])
            if settings["do_resize"]:
                height, width = settings["size"]
                im = im.resize((width, height), resample=settings["resample"])
            x = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as e:
        raise SurgeonError(f"{path}: cannot read image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if x.ndim == 2:
        x = x[:, :, None]
    if settings["do_rescale"]:
        x = x * settings["rescale_factor"]
    if settings["do_normalize"]:
        x = (x - np.asarray(settings["image_mean"], np.float32)) / np.asarray(settings["image_std"], np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))


def read_image_manifest(path, expected: int) -> list:
    """The images paired with the audio, row i with pair i: a CSV with a `path` column (relative to
    the CSV). Returns Items whose path is the image."""
    from surgeon.data.types import Item

    path = Path(path).expanduser()
    if not path.is_file():
        raise SurgeonError(f"--source-pairs {path}: no such file (expected a CSV manifest of images with a `path` column)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
            raise SurgeonError(f"--source-pairs {path}: no `path` column (columns: {', '.join(reader.fieldnames or []) or 'none'})")
        rows = [row["path"] for row in reader if (row.get("path") or "").strip()]
    if len(rows) != expected:
        raise SurgeonError(f"--source-pairs {path}: {len(rows)} images for {expected} audio pairs; row i of the image "
                           "manifest goes with pair i of --pairs, so the counts must match")
    items = []
    for n, rel in enumerate(rows):
        image = Path(rel.strip()).expanduser()
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            raise SurgeonError(f"--source-pairs {path}: row {n + 1}: image {image} not found")
        items.append(Item(key=rel, label=-1, path=image, group=None))
    return items


def open_encoder(ref: str, role: str, at: str = "attention", allow_pickle: bool = False) -> Encoder:
    if at not in AT:
        raise SurgeonError(f"--at: unknown place {at!r}; expected one of {', '.join(AT)}")
    from surgeon.data.features import feature_spec_for
    from surgeon.frontends import FRONTENDS
    from surgeon.hf import family_of_model, load_pretrained
    from surgeon.io.checkpoint import read_json
    from surgeon.io.pickle_checkpoint import is_pickle_path
    from surgeon.refs import resolve

    path = resolve(ref)
    if path.is_file() and is_pickle_path(path):  # the authors' BEATs .pt (refused without allow_pickle)
        from surgeon.beats.checkpoint import load_pt

        model = load_pt(path, allow_pickle=allow_pickle).eval()
    else:
        model = load_pretrained(ref)
    family = family_of_model(model)
    base = getattr(model, family.base_prefix, model)  # the heads are not needed
    pre_file = path / "preprocessor_config.json"
    pre = read_json(pre_file) if path.is_dir() and pre_file.is_file() else {}
    config = model.config.to_dict()
    if family.modality == "text":
        import transformers

        # transformers 5 builds an empty tokenizer (special tokens only) when the files are absent
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise SurgeonError(f"{ref}: the {role} is a text model but has no tokenizer files "
                               f"({', '.join(TOKENIZER_FILES)}); save its tokenizer beside the weights")
        try:
            tok = transformers.AutoTokenizer.from_pretrained(path)
        except Exception as e:
            reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise SurgeonError(f"{ref}: the {role} is a text model but its tokenizer cannot be loaded ({reason})") from None
        return Encoder(ref, base, family, at=at, modality="text", tokenizer=tok)
    if family.modality == "speech":
        spec = feature_spec_for(config, family.name, preprocessor_config=pre)
        # group-norm feature encoders (base models) are trained without an attention mask
        pass_mask = bool(pre.get("return_attention_mask", config.get("feat_extract_norm") == "layer"))
        return Encoder(ref, base, family, at=at, modality="speech", spec=spec, pass_mask=pass_mask)
    if family.modality == "audio" and FRONTENDS[family.frontend].features == "waveform":
        # BEATs: an audio model that reads the raw waveform and computes its own fbank (and token mask)
        return Encoder(ref, base, family, at=at, modality="speech", spec=feature_spec_for(config, family.name))
    if family.modality == "audio":
        return Encoder(ref, base, family, at=at, modality="audio", spec=feature_spec_for(config, family.name))
    if family.modality == "image":
        return Encoder(ref, base, family, at=at, modality="image", image=image_settings(config, pre))
    raise SurgeonError(f"{ref}: select-layers has no input for a {family.modality} model ({family.name}) as the {role}")


def check_shapes(source: str, target: str, allow_pickle: bool = False) -> tuple[int, int]:
    """(num_layers, hidden_size) shared by both checkpoints, read from the headers before any loading."""
    from surgeon.io.checkpoint import Checkpoint

    s, t = Checkpoint.open(source, allow_pickle=allow_pickle), Checkpoint.open(target, allow_pickle=allow_pickle)
    sd, td = s.dims, t.dims
    if (sd["num_layers"], sd["hidden_size"]) != (td["num_layers"], td["hidden_size"]):
        raise SurgeonError(
            f"--source {source} has {sd['num_layers']} layers of width {sd['hidden_size']} but --target {target} has "
            f"{td['num_layers']} layers of width {td['hidden_size']}; select-layers compares layer i with layer i "
            "and needs the same layer count and hidden size"
        )
    return td["num_layers"], td["hidden_size"]


# -- accumulation ---------------------------------------------------------------------------------


@dataclass
class Accumulator:
    """Running per-layer sums for euclidean/inner, and for swd the point clouds: each sample's
    projections onto the directions when there are fewer directions than dimensions, else the
    pooled vectors themselves (whichever is smaller)."""

    num_layers: int
    directions: object  # numpy [hidden, projections] (POT's random directions for the seed)
    count: int = 0
    dist_sum: list = field(default_factory=list)
    inner_sum: list = field(default_factory=list)
    cloud_s: list = field(default_factory=list)  # per layer: list of numpy [batch, projections or hidden]
    cloud_t: list = field(default_factory=list)

    def __post_init__(self):
        L = self.num_layers
        self.dist_sum, self.inner_sum = [0.0] * L, [0.0] * L
        self.cloud_s, self.cloud_t = [[] for _ in range(L)], [[] for _ in range(L)]

    @property
    def keeps_projections(self) -> bool:
        """Projections (float64, 8 bytes each) when they take less room than the vectors (as the
        model made them, float32: 4 bytes per dimension)."""
        hidden, projections = self.directions.shape
        return 2 * projections < hidden

    def add(self, src_layers, tgt_layers) -> None:
        for i, (s, t) in enumerate(zip(src_layers, tgt_layers)):
            s64, t64 = s.double(), t.double()
            self.dist_sum[i] += float((s64 - t64).norm(dim=1).sum())
            self.inner_sum[i] += float((s64 * t64).sum(dim=1).sum())
            if self.keeps_projections:
                self.cloud_s[i].append(s64.numpy() @ self.directions)
                self.cloud_t[i].append(t64.numpy() @ self.directions)
            else:  # float32 and float64 as they are (exact), anything narrower widened to float32
                self.cloud_s[i].append(_as_numpy(s))
                self.cloud_t[i].append(_as_numpy(t))
        self.count += src_layers[0].shape[0]

    def projected_distances(self, i: int):
        """Layer i's squared 1-D Wasserstein distance along each direction (numpy [projections]):
        what ot.sliced_wasserstein_distance averages before its square root. Both clouds hold one
        point per pair with equal weights, so it is the mean squared difference of the sorted
        projections (what ot.wasserstein_1d computes for them, several times faster)."""
        import numpy as np

        xs, xt = np.concatenate(self.cloud_s[i]), np.concatenate(self.cloud_t[i])
        P = self.directions.shape[1]
        out = []
        for start in range(0, P, DIRECTION_CHUNK):
            cols = slice(start, start + DIRECTION_CHUNK)
            ps, pt = (xs[:, cols], xt[:, cols]) if self.keeps_projections else (
                xs.astype("float64") @ self.directions[:, cols], xt.astype("float64") @ self.directions[:, cols])
            out.append(((np.sort(ps, axis=0) - np.sort(pt, axis=0)) ** 2).mean(axis=0))
        return np.concatenate(out)

    def scores(self) -> tuple[dict[str, list[float]], list]:
        """({metric: per-layer scores}, per-layer projected distances of the swd)."""
        n = max(self.count, 1)
        per_direction = [self.projected_distances(i) for i in range(self.num_layers)]
        scores = {
            "swd": [float(v.mean() ** 0.5) for v in per_direction],
            "euclidean": [d / n for d in self.dist_sum],
            "inner": [d / n for d in self.inner_sum],
        }
        return scores, per_direction


def _as_numpy(x):
    import torch

    return (x if x.dtype in (torch.float32, torch.float64) else x.float()).numpy()


def swd_noise(per_direction: list, order: list[int], top_k: int) -> dict:
    """How much the SWD's random directions could move the choice: each layer's standard error, and
    the gap between the k-th and (k+1)-th ranked layers in standard errors of that difference, paired
    over the same directions (delta method on the square root). None where undefined."""
    import numpy as np

    P = len(per_direction[0])
    swd = [float(np.sqrt(v.mean())) for v in per_direction]

    def influence(i):  # d sqrt(mean) / d value, per direction
        return per_direction[i] / (2 * swd[i]) if swd[i] > 0 else np.zeros(P)

    stderr = [float(influence(i).std(ddof=1) / np.sqrt(P)) if P > 1 else None for i in range(len(swd))]
    z = None
    if top_k < len(order) and P > 1:
        a, b = order[top_k - 1], order[top_k]
        se = float((influence(b) - influence(a)).std(ddof=1) / np.sqrt(P))
        gap = swd[b] - swd[a]
        z = float(gap / se) if se > 0 else None  # no spread: the estimates do not depend on the directions
    return {"stderr": stderr, "boundary": [order[top_k - 1], order[top_k]] if top_k < len(order) else None,
            "boundary_z": z}


def random_directions(hidden: int, projections: int, seed: int):
    """The unit directions ot.sliced_wasserstein_distance(..., n_projections, seed=seed) draws."""
    import ot

    return ot.sliced.get_random_projections(hidden, projections, seed)


def check_modalities(source: str, target: str, source_pairs, allow_pickle: bool = False) -> None:
    """From the headers, before any loading: the target hears the audio; an image source needs its
    image manifest, and only an image source takes one."""
    from surgeon.io.checkpoint import Checkpoint

    src = Checkpoint.open(source, allow_pickle=allow_pickle).family
    tgt = Checkpoint.open(target, allow_pickle=allow_pickle).family
    if tgt is not None and tgt.modality not in AUDIO_MODALITIES:
        raise SurgeonError(f"--target {target}: select-layers needs an audio or speech model as the target (it hears "
                           f"the audio); {tgt.name} is a {tgt.modality} model")
    if src is not None and src.modality == "image" and source_pairs is None:
        raise SurgeonError(f"--source {source}: an image model ({src.name}) needs --source-pairs IMAGES.csv "
                           "(a CSV with a `path` column, row i paired with pair i of --pairs)")
    if source_pairs is not None and (src is None or src.modality != "image"):
        kind = f"a {src.modality} model ({src.name})" if src is not None else "not an image model"
        raise SurgeonError(f"--source-pairs: only for an image source; --source {source} is {kind}")


def split_origin(pairs, index) -> str:
    """Where the pairs' train/valid/test split comes from, in words (for the output)."""
    if index.name == "transcripts":
        path = Path(pairs).expanduser()
        path = path / "manifest.csv" if path.is_dir() else path
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if "split" in header:
            return "the manifest's split column"
        return "surgeon's fixed hash split of the file keys (the manifest has no split column), as in training"
    return f"surgeon's fixed hash split of the file keys ({index.name} has no official split), as in training"


def take_pairs(items: list, *, split: str, fraction: float, limit: int | None, seed: int) -> list[int]:
    """Indices of the pairs used: those of `split` ("all": every one), then a seeded random sample of
    `fraction` of them (at least one), then the first `limit`, in file order."""
    import random

    chosen = [i for i, it in enumerate(items) if split == "all" or it.group == split]
    if fraction < 1.0 and chosen:
        keep = max(1, round(fraction * len(chosen)))
        chosen = sorted(random.Random(seed).sample(chosen, keep))
    return chosen[:limit] if limit is not None else chosen


def select_layers(source: str, target: str, pairs, *, metric: str = "swd", top_k: int = 6,
                  projections: int = DEFAULT_PROJECTIONS, seed: int = 0, batch_size: int = 8,
                  split: str = "train", fraction: float = 1.0, limit: int | None = None, at: str = "attention",
                  progress: bool = False, source_pairs=None, allow_pickle: bool = False) -> dict:
    """Score every layer pair and choose the top k; returns the selection document (see write_selection).

    split / fraction / limit: which pairs (take_pairs); at: where the hidden states are taken (AT).
    source_pairs: for an image source (ViT), a CSV manifest of images, row i going with pair i of
    `pairs`; the source sees the image, the target hears the audio. allow_pickle: read pickled
    checkpoints (the authors' BEATs .pt files), with torch.load(weights_only=True)."""
    import torch

    from surgeon.speech.datasets import load_pairs

    if metric not in METRICS:
        raise SurgeonError(f"--metric: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if at not in AT:
        raise SurgeonError(f"--at: unknown place {at!r}; expected one of {', '.join(AT)}")
    if split not in SPLITS:
        raise SurgeonError(f"--split: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not 0.0 < fraction <= 1.0:
        raise SurgeonError(f"--fraction: must be in (0, 1], got {fraction}")
    if projections < 1:
        raise SurgeonError("--projections: must be at least 1")
    if batch_size < 1:
        raise SurgeonError("--batch-size: must be at least 1")
    if limit is not None and limit < 1:
        raise SurgeonError("--limit: must be at least 1")
    num_layers, hidden = check_shapes(source, target, allow_pickle)
    if not 1 <= top_k <= num_layers:
        raise SurgeonError(f"--top-k: must be between 1 and the number of layers ({num_layers}), got {top_k}")
    check_modalities(source, target, source_pairs, allow_pickle)
    index = load_pairs(pairs)
    items = [it for it in index.items if it.path is not None]
    if not items:
        raise SurgeonError(f"{pairs}: no paired audio found" + (f" ({len(index.missing)} listed files are missing)" if index.missing else ""))
    source_items = items  # a text or audio source takes the same pairs (transcript or audio)
    if source_pairs is not None:
        if index.missing:  # a dropped row would shift every later image onto the wrong clip
            raise SurgeonError(f"--pairs {pairs}: {len(index.missing)} listed audio files are missing (first: "
                               f"{index.missing[0]}); with --source-pairs every row must be present to stay aligned")
        source_items = read_image_manifest(source_pairs, len(items))
    origin = split_origin(pairs, index) if split != "all" else "every pair"
    in_split = sum(1 for it in items if split == "all" or it.group == split)
    if not in_split:
        from collections import Counter

        have = Counter(it.group for it in items)
        raise SurgeonError(f"--split {split}: none of the {len(items)} pairs of {pairs} is in it ({origin}: "
                           + ", ".join(f"{k} {v}" for k, v in sorted(have.items())) + "); choose another --split")
    chosen = take_pairs(items, split=split, fraction=fraction, limit=limit, seed=seed)
    items, source_items = [items[i] for i in chosen], [source_items[i] for i in chosen]
    src, tgt = open_encoder(source, "source", at, allow_pickle), open_encoder(target, "target", at, allow_pickle)

    torch.manual_seed(seed)
    acc = Accumulator(num_layers, random_directions(hidden, projections, seed))
    forward_s = distance_s = 0.0
    starts = range(0, len(items), batch_size)
    with _progress(progress, len(items)) as advance:
        for i in starts:
            batch = items[i : i + batch_size]
            t0 = time.perf_counter()
            s_layers, t_layers = src.pooled(source_items[i : i + batch_size]), tgt.pooled(batch)
            t1 = time.perf_counter()
            acc.add(s_layers, t_layers)
            distance_s += time.perf_counter() - t1
            forward_s += t1 - t0
            advance(len(batch))
    t1 = time.perf_counter()
    all_scores, per_direction = acc.scores()
    distance_s += time.perf_counter() - t1
    scores = all_scores[metric]
    order = ranking(scores, metric)
    return {
        "format": "surgeon-layer-selection/1",
        "metric": metric,
        "higher_is_more_similar": METRICS[metric],
        "at": at,
        "taken_from": {"source": _tap_words(src), "target": _tap_words(tgt)},
        "source": str(source),
        "target": str(target),
        "pairs": str(pairs),
        "source_pairs": str(source_pairs) if source_pairs is not None else None,
        "data": {"split": split, "split_from": origin, "fraction": fraction, "limit": limit,
                 "pairs_listed": len(index.items) + len(index.missing),
                 "pairs_in_split": in_split, "pairs_used": len(items)},
        "num_pairs": acc.count,
        "projections": projections,
        "seed": seed,
        "top_k": top_k,
        "scores": scores,
        "ranking": order,
        "layers": sorted(order[:top_k]),
        "all_scores": all_scores,
        "swd_noise": swd_noise(per_direction, ranking(all_scores["swd"], "swd"), top_k),
        "timing": {"forward_s": forward_s, "distance_s": distance_s},
    }


def _tap_words(enc: Encoder) -> str:
    """Layer 0's tap, as a module path and side, with N for the layer index."""
    path, side = enc.tap(0)
    layers = enc.family.memory.layers
    return f"{path.replace(f'{layers}.0', f'{layers}.N', 1)} ({side})"


class _progress:
    """A rich progress bar on stderr when asked, otherwise nothing."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import Progress

        self.bar = Progress(console=Console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task("pairs through both models", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


# -- output ---------------------------------------------------------------------------------------


def plot_path_for(out) -> Path:
    return Path(out).with_suffix(".png")


def write_selection(doc: dict, out, *, plot=None, force: bool = False, inputs=()) -> tuple[Path, Path]:
    """selection.json and a bar chart of the per-layer scores (chosen layers highlighted), atomically."""
    from surgeon.io.atomic import atomic_output, check_output

    out = Path(out)
    plot = Path(plot) if plot else plot_path_for(out)
    check_output(out, force=force, inputs=inputs)
    check_output(plot, force=force, inputs=inputs)
    with atomic_output(plot, force=force, inputs=inputs, directory=False) as tmp:
        plot_scores(doc, tmp)
    with atomic_output(out, force=force, inputs=inputs, directory=False) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return out, plot


def plot_scores(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores, chosen = doc["scores"], set(doc["layers"])
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(scores) + 2.5), 4.5))
    ax.bar(range(len(scores)), scores, color=["tab:orange" if i in chosen else "tab:blue" for i in range(len(scores))])
    low, high = min(scores), max(scores)
    pad = 0.15 * (high - low) or 0.05 * abs(high) or 1.0
    ax.set_ylim(low - pad, high + pad)  # the axis spans the scores, so the differences between layers show
    ax.set_xlabel("layer")
    better = "higher" if doc["higher_is_more_similar"] else "lower"
    ax.set_ylabel(f"{doc['metric']} ({better} = more similar)")
    ax.set_title(f"top {doc['top_k']} layers by {doc['metric']} (orange = chosen)")
    ax.set_xticks(range(len(scores)))
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
