"""Synthetic BEATs checkpoints in the authors' layout, for tests, benchmarks and trying things by hand.

The layout is written here from the published facts (key names, shapes, order), not from surgeon's model,
so a test that loads one checks the model against the layout. Weights are random but scaled to give
activations of order one (attention that is far from uniform, a position bias that matters), the
relative-position table is one tensor listed under every layer, and fine-tuned checkpoints carry a
predictor and a label_dict.

    python -m surgeon.beats.fixtures out.pt --shape base --predictor 527
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from surgeon.errors import SurgeonError

# the two sizes: "small" for tests (milliseconds), "base" = BEATs_iter3 (90,311,792 parameters)
SHAPES = {
    "small": dict(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
                  embed_dim=24, conv_pos=8, conv_pos_groups=4, num_buckets=32, max_distance=64),
    "base": dict(encoder_layers=12, encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_attention_heads=12,
                 embed_dim=512, conv_pos=128, conv_pos_groups=16, num_buckets=320, max_distance=800),
}
# what every published checkpoint sets (BEATs_iter3)
ITER3 = dict(input_patch_size=16, conv_bias=False, activation_fn="gelu", layer_norm_first=False, deep_norm=True,
             relative_position_embedding=True, gru_rel_pos=True, layer_wise_gradient_decay_ratio=0.6,
             dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.05, dropout_input=0.0)


def beats_cfg(shape: str = "small", predictor_class: int | None = None, **overrides) -> dict:
    """An authors' cfg dict of one of SHAPES, iter3's settings, a predictor when predictor_class is given."""
    cfg = {**ITER3, **SHAPES[shape], "finetuned_model": predictor_class is not None}
    if predictor_class is not None:
        cfg.update(predictor_class=predictor_class, predictor_dropout=0.0)
    return {**cfg, **overrides}


def layout(cfg: dict) -> list[tuple[str, tuple]]:
    """[(key, shape)] of the authors' state dict for `cfg`, in the order their model lists them."""
    d, ffn, heads = cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"], cfg["encoder_attention_heads"]
    e, p, k = cfg["embed_dim"], cfg["input_patch_size"], cfg["conv_pos"]
    table = ("self_attn.relative_attention_bias.weight", (cfg["num_buckets"], heads))
    keys: list[tuple[str, tuple]] = []
    if e != d:
        keys += [("post_extract_proj.weight", (d, e)), ("post_extract_proj.bias", (d,))]
    keys.append(("patch_embedding.weight", (e, 1, p, p)))
    if cfg.get("conv_bias"):
        keys.append(("patch_embedding.bias", (e,)))
    keys += [("encoder.pos_conv.0.bias", (d,)), ("encoder.pos_conv.0.weight_g", (1, 1, k)),
             ("encoder.pos_conv.0.weight_v", (d, d // cfg["conv_pos_groups"], k))]
    for i in range(cfg["encoder_layers"]):
        layer = []
        if cfg.get("gru_rel_pos"):
            layer.append(("self_attn.grep_a", (1, heads, 1, 1)))
        if cfg.get("relative_position_embedding") and i == 0:
            layer.append(table)  # created first in layer 0 ...
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            layer += [(f"self_attn.{proj}.weight", (d, d)), (f"self_attn.{proj}.bias", (d,))]
        if cfg.get("gru_rel_pos"):
            layer += [("self_attn.grep_linear.weight", (8, d // heads)), ("self_attn.grep_linear.bias", (8,))]
        if cfg.get("relative_position_embedding") and i > 0:
            layer.append(table)  # ... and assigned to the later layers afterwards
        layer += [("self_attn_layer_norm.weight", (d,)), ("self_attn_layer_norm.bias", (d,)),
                  ("fc1.weight", (ffn, d)), ("fc1.bias", (ffn,)), ("fc2.weight", (d, ffn)), ("fc2.bias", (d,)),
                  ("final_layer_norm.weight", (d,)), ("final_layer_norm.bias", (d,))]
        keys += [(f"encoder.layers.{i}.{name}", shape) for name, shape in layer]
    keys += [("encoder.layer_norm.weight", (d,)), ("encoder.layer_norm.bias", (d,)),
             ("layer_norm.weight", (e,)), ("layer_norm.bias", (e,))]
    if cfg.get("finetuned_model"):
        keys += [("predictor.weight", (cfg["predictor_class"], d)), ("predictor.bias", (cfg["predictor_class"],))]
    return keys


def _random(key: str, shape: tuple, gen, device):
    import torch

    if device == "meta":
        return torch.empty(shape, device="meta")
    x = torch.randn(shape, generator=gen)
    leaf = key.rsplit(".", 1)[-1]
    if "norm" in key:  # LayerNorms: near the identity, not at it
        x = (1.0 if leaf == "weight" else 0.0) + 0.1 * x
    elif leaf == "bias":
        x = 0.1 * x
    elif leaf == "grep_a":
        x = 1.0 + 0.2 * x
    elif leaf == "weight_g":
        x = 0.5 + x.abs()
    elif not key.endswith("relative_attention_bias.weight"):  # the table stays of order one
        x = x / (x[0].numel() ** 0.5)  # weights: variance 1 / fan-in
    return x.to(device) if device else x


def beats_state_dict(cfg: dict, seed: int = 0, device=None) -> dict:
    """Random tensors of the authors' layout; the table is one tensor under every layer's key."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state, table = {}, None
    for key, shape in layout(cfg):
        if key.endswith("relative_attention_bias.weight"):
            table = table if table is not None else _random(key, shape, gen, device)
            state[key] = table
        else:
            state[key] = _random(key, shape, gen, device)
    return state


def build_tiny(model_class=None, *, shape: str = "small", predictor_class: int | None = None, seed: int = 0,
               **overrides):
    """A BEATsModel of the fixtures' random weights (the anatomy's tiny builder; model_class is ignored:
    BEATs has one model class, with a predictor when predictor_class is given)."""
    from surgeon.beats.checkpoint import BEATsCheckpoint, build
    from surgeon.beats.config import BEATsConfig

    cfg = beats_cfg(shape, predictor_class, **overrides)
    labels = None if predictor_class is None else {i: f"/m/fixture{i:04d}" for i in range(predictor_class)}
    return build(BEATsCheckpoint(Path("tiny"), BEATsConfig.from_cfg(cfg), beats_state_dict(cfg, seed), labels))


def write_beats_checkpoint(out: str | os.PathLike, shape: str = "small", predictor_class: int | None = None, *,
                           seed: int = 0, with_cfg: bool = True, force: bool = False, **overrides) -> Path:
    """Write {cfg, model[, label_dict]} with torch.save, atomically (a bare state dict without with_cfg)."""
    import torch

    from surgeon.io.atomic import atomic_output

    cfg = beats_cfg(shape, predictor_class, **overrides)
    state = beats_state_dict(cfg, seed)
    doc = {"cfg": cfg, "model": state} if with_cfg else state
    if with_cfg and predictor_class is not None:
        doc["label_dict"] = {i: f"/m/fixture{i:04d}" for i in range(predictor_class)}
    with atomic_output(out, force=force, directory=False) as tmp:
        torch.save(doc, tmp)
    return Path(out)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write a synthetic BEATs checkpoint in the authors' layout.")
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--predictor", type=int, default=None, help="classes of a fine-tuned predictor (527: AS2M)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    try:
        print(write_beats_checkpoint(args.out, args.shape, args.predictor, seed=args.seed, force=args.force))
    except SurgeonError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
