"""A LoAA save from before the paper's counts (conv biases, LayerNorms trained, no bias/train_norm options
in its record) loads as it was trained."""
from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_old_loaa_save_with_conv_biases_loads(tmp_path, tiny_dir):
    from surgeon.api import inject, load, save_surgery, surgery
    from surgeon.hf import load_pretrained

    torch.manual_seed(0)
    model = load_pretrained(tiny_dir("ast", frequency_stride=16, time_stride=16)).eval()
    inject(model, "loaa", bottleneck=4, bias=True, train_norm=True)
    for name, p in model.named_parameters():
        if "surgeon_loaa" in name:
            torch.nn.init.normal_(p, std=0.1)
    save_surgery(model, tmp_path / "old")
    record_path = tmp_path / "old" / "surgery.json"
    record = json.loads(record_path.read_text())
    for entry in record["methods"]:  # as the earlier version wrote it: neither option existed
        del entry["options"]["bias"], entry["options"]["train_norm"]
    record_path.write_text(json.dumps(record))
    again = load(tmp_path / "old")
    options = surgery(again)["methods"][0]["options"]
    assert options["bias"] is True and options["train_norm"] is True
    x = torch.randn(2, model.config.max_length, model.config.num_mel_bins)
    with torch.no_grad():
        assert torch.allclose(again(x).logits, model(x).logits, atol=1e-6)


def test_new_loaa_save_keeps_its_options(tmp_path, tiny_dir):
    from surgeon.api import inject, load, save_surgery, surgery
    from surgeon.hf import load_pretrained

    model = load_pretrained(tiny_dir("ast", frequency_stride=16, time_stride=16)).eval()
    inject(model, "loaa", bottleneck=4)
    save_surgery(model, tmp_path / "new")
    assert surgery(load(tmp_path / "new"))["methods"][0]["options"]["bias"] is False
