"""How fast is `surgeon inspect` on a bert-large-shaped checkpoint (~1.3 GB)?

Measured side by side in one run (interleaved, medians):
  surgeon inspect --json    vs  python -c "import torch"   (goal: under half)
  surgeon --help            vs  python -c "import torch"   (goal: under half)
  transformers from_pretrained  vs  surgeon inspect        (goal: inspect at least 20x faster)

    python -m benchmarks.inspect [--repeats 5]      (from the repository root)
"""
from __future__ import annotations

import argparse
import sys

from benchmarks._common import CACHE, interleaved_medians, random_checkpoint, surgeon_cmd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from transformers import BertConfig

    # google-bert/bert-large-uncased's shape: 24 layers, hidden 1024, 16 heads, FFN 4096 (~1.34 GB in F32)
    large = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    path = random_checkpoint(CACHE / "bert-large-shaped", large, "BertModel")
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    print(f"checkpoint: {path} ({size / 1e9:.2f} GB)")
    py = sys.executable
    fast = {
        "surgeon inspect --json": surgeon_cmd("inspect", path, "--json"),
        "surgeon --help": surgeon_cmd("--help"),
        'python -c "import torch"': [py, "-c", "import torch"],
    }
    t = interleaved_medians(fast, args.repeats)
    load = interleaved_medians(
        {"transformers from_pretrained": [py, "-c", f"from transformers import BertModel; BertModel.from_pretrained({str(path)!r})"]},
        max(2, args.repeats // 2),
    )
    t.update(load)
    width = max(map(len, t))
    print("\nmedian wall time")
    for name, sec in t.items():
        print(f"  {name:<{width}}  {sec * 1000:8.0f} ms")
    torch_t = t['python -c "import torch"']
    print("\nratios")
    print(f"  inspect / import torch : {t['surgeon inspect --json'] / torch_t:.3f}   (goal < 0.5)")
    print(f"  --help  / import torch : {t['surgeon --help'] / torch_t:.3f}   (goal < 0.5)")
    print(f"  load    / inspect      : {t['transformers from_pretrained'] / t['surgeon inspect --json']:.1f}x  (goal >= 20x)")


if __name__ == "__main__":
    main()
