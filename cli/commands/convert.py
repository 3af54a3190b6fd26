"""`surgeon convert`: write a model built from another one as a model directory (surgeon.train.imagenet_init)."""
from __future__ import annotations

from typing import Optional

import typer

from surgeon_cli.options import option
from surgeon_cli.render import print_json

convert_app = typer.Typer(no_args_is_help=True, help="Write a model built from another as a model directory.")


@convert_app.command("imagenet-ast")
def imagenet_ast(
    vit: str = typer.Argument(..., metavar="VIT_OR_DEIT", help="An ImageNet ViT or DeiT (alias, directory, Hub id)."),
    out: str = option("out", ..., more="(a model directory)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Input length in fbank frames (default AST's 1024)."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Patch stride on both axes (AST's 10; 16: no overlap)."),
    as_json: bool = option("json", False),
    force: bool = option("force", False),
):
    """An AST initialised from an ImageNet ViT or DeiT (paper 004; AST's own ImageNet start is DeiT-B-384)."""
    from surgeon.train.imagenet_init import convert_imagenet_ast

    doc = convert_imagenet_ast(vit, out, frames=frames, stride=stride, force=force)
    if as_json:
        print_json(doc)
        return
    print(f"wrote an ImageNet-initialised AST ({doc['tokens']} tokens: {doc['max_length']} frames, stride "
          f"{doc['frequency_stride']}x{doc['time_stride']}) from {doc['source']} to {doc['out']}")
