"""`merge-lora --verify`: run the unmerged and the merged model on one probe input, report the largest
difference. The unmerged model is the base with forward hooks adding scaling * (x A^T) B^T to every
adapted Linear (the LoRA forward, as the surgery contract defines it) and the full tensors loaded."""
from __future__ import annotations

from pathlib import Path

# modality (anatomy) -> probe input builder; each gets the transformers config
PROBES = {
    "speech": lambda c, torch: {"input_values": torch.randn(1, 16000)},
    "audio": lambda c, torch: {"input_values": torch.randn(1, c.max_length, c.num_mel_bins)},
    "image": lambda c, torch: {"pixel_values": torch.randn(1, c.num_channels, c.image_size, c.image_size)},
    "text": lambda c, torch: {"input_ids": torch.randint(0, c.vocab_size, (1, 16))},
}


def probe_input(config, family, seed: int = 0) -> dict:
    import torch

    torch.manual_seed(seed)
    return PROBES[family.modality](config, torch)


def attach_lora(model, plan) -> list:
    """Make a loaded base model compute the unmerged LoRA model; returns the hook handles."""
    import torch

    fam, base, w = plan.base.family, plan.base, plan.adapter.weights
    handles = []
    for key, fold in plan.folds.items():
        module = model.get_submodule(fam.translate(key, base.scheme, "memory").removesuffix(".weight"))
        a = w.get(fold.pair.a_key).to(torch.float32)
        b = w.get(fold.pair.b_key).to(torch.float32)
        scaling = fold.pair.scaling

        def hook(mod, inputs, output, a=a, b=b, scaling=scaling):
            x = inputs[0].to(torch.float32)
            return output + (scaling * (x @ a.T) @ b.T).to(output.dtype)

        handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        for key, akey in plan.replace.items():
            model.get_parameter(fam.translate(key, base.scheme, "memory")).copy_(w.get(akey))
    return handles


def check_fold(plan, merged_dir: str | Path) -> dict:
    """On a probe input: the largest absolute difference between the unmerged and the merged model's
    first output (`max_difference`), and how much the adapter changes the base's (`lora_effect`): 0
    means an untrained adapter (every B zero), whose check shows nothing."""
    import torch

    from surgeon.hf import load_pretrained

    unmerged = load_pretrained(plan.base.path, dtype=torch.float32)
    x = probe_input(unmerged.config, plan.base.family)
    with torch.no_grad():
        y_base = unmerged(**x)[0]
        attach_lora(unmerged, plan)
        y0 = unmerged(**x)[0]
        y1 = load_pretrained(merged_dir, dtype=torch.float32)(**x)[0]
    return {"max_difference": (y0.float() - y1.float()).abs().max().item(),
            "lora_effect": (y0.float() - y_base.float()).abs().max().item()}
