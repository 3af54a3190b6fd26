"""An AST initialised from an ImageNet ViT or DeiT, without audio pre-training (paper 004's backbone).

Following the AST authors' ImageNet initialisation: the transformer layers and final LayerNorm are
copied unchanged; the RGB patch projection becomes a one-channel projection by summing its weights
over the colour channels; the class token is copied, and so is a DeiT's distillation token (a ViT has
none: its class token starts that one too); the square grid of patch positions is bilinearly resized
to the spectrogram's frequency x time grid (surgeon.positions.resize_grid), so no position is left at
zero. Any image family with AST's layer layout and an absolute position table qualifies.
"""
from __future__ import annotations

from surgeon.anatomy import FAMILIES
from surgeon.errors import SurgeonError

COPIED_CONFIG = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                 "layer_norm_eps", "qkv_bias", "patch_size")


def ast_from_vit(vit, **config_overrides):
    """ASTForAudioClassification with the weights of `vit` (a ViT or DeiT model, or a reference to one)."""
    import torch
    import transformers

    from surgeon.hf import base_prefix, family_of_model, load_pretrained, quiet_transformers
    from surgeon.positions import grid_of, patch_axes, resize_grid

    quiet_transformers()
    if not isinstance(vit, torch.nn.Module):
        vit = load_pretrained(vit)
    family, ast_family = family_of_model(vit), FAMILIES["ast"]
    if family.memory != ast_family.memory or family.patch_embedding != ast_family.patch_embedding:
        raise SurgeonError(f"model.vit_ref: expected an ImageNet ViT or DeiT checkpoint (AST's layout), "
                           f"got {type(vit).__name__}")
    special = family.num_special_tokens
    vcfg = vit.config
    settings = {k: getattr(vcfg, k) for k in COPIED_CONFIG if hasattr(vcfg, k)}
    config = transformers.ASTConfig(**{**settings, **config_overrides})
    ast = transformers.ASTForAudioClassification(config)
    src = vit.get_submodule(base_prefix(vit).rstrip(".")) if base_prefix(vit) else vit
    dst = ast.audio_spectrogram_transformer
    source = src.state_dict()
    target = dst.state_dict()
    new = {}
    for name, value in source.items():
        if name == "embeddings.position_embeddings":
            side = int(round((value.shape[1] - special) ** 0.5))
            grid = resize_grid(value, special, (side, side), grid_of(patch_axes(ast_family, config)))
            # [CLS, DIST, patches]; a ViT's CLS position starts the DIST one
            new[name] = grid if special == 2 else torch.cat([grid[:, :1], grid], dim=1)
        elif name == "embeddings.cls_token":
            new[name] = value
            new.setdefault("embeddings.distillation_token", value.clone())
        elif name == "embeddings.distillation_token":
            new[name] = value
        elif name == "embeddings.patch_embeddings.projection.weight":
            new[name] = value.sum(dim=1, keepdim=True)
        elif name in target:
            new[name] = value
    mismatched = [n for n, v in new.items() if n in target and target[n].shape != v.shape]
    if mismatched:
        raise SurgeonError(f"model.vit_ref: {mismatched[0]} does not fit the AST ({tuple(new[mismatched[0]].shape)} "
                           f"vs {tuple(target[mismatched[0]].shape)})")
    missing = sorted(n for n in target if n not in new)
    if missing:
        raise SurgeonError(f"model.vit_ref: the ViT lacks {missing[0]} for the AST")
    dst.load_state_dict(new)
    return ast.eval()


def convert_imagenet_ast(vit_ref, out, *, frames: int | None = None, stride: int | None = None,
                         num_mel_bins: int | None = None, force: bool = False) -> dict:
    """`surgeon convert imagenet-ast`: write the ImageNet-initialised AST of `vit_ref` (a ViT or a DeiT,
    e.g. the distilled DeiT-B-384 AST itself starts from) as a model directory that inject, inspect and
    recipes (model.ref) take. frames: input length (AST's max_length); stride: the patch stride along
    both axes (AST's 10 overlaps its 16-pixel patches; 16 gives the non-overlapping grid LoAA needs)."""
    from pathlib import Path

    from surgeon.io.atomic import atomic_output
    from surgeon.refs import resolve

    for name, value in (("--frames", frames), ("--stride", stride), ("--mel-bins", num_mel_bins)):
        if value is not None and value < 1:
            raise SurgeonError(f"{name}: must be at least 1, got {value}")
    source = Path(resolve(vit_ref))
    overrides = {k: v for k, v in (("max_length", frames), ("frequency_stride", stride), ("time_stride", stride),
                                   ("num_mel_bins", num_mel_bins)) if v is not None}
    from surgeon.io.checkpoint import Checkpoint

    patch = (Checkpoint.open(source).config or {}).get("patch_size", 16)
    if frames is not None and frames < patch:
        raise SurgeonError(f"--frames: {frames} frames hold no patch of {patch} frames")
    with atomic_output(out, force=force, inputs=[source]) as tmp:
        ast = ast_from_vit(str(source), **overrides)
        ast.config._name_or_path = ""
        ast.save_pretrained(tmp)
    c = ast.config
    return {"out": str(out), "source": str(source), "family": "ast", "max_length": c.max_length,
            "num_mel_bins": c.num_mel_bins, "frequency_stride": c.frequency_stride, "time_stride": c.time_stride,
            "tokens": int(ast.audio_spectrogram_transformer.embeddings.position_embeddings.shape[1])}
