"""Streaming merges: Multimodal Attention Merging (paper 003) and LoRA folding.

Both plan from the checkpoints' headers, then stream one tensor at a time (unchanged tensors copied
file to file, merged ones combined in float32 with numpy, no torch), writing a complete model
directory with surgeon's checkpoint writer inside `atomic_output`: memory stays at a few tensors
whatever the model size, and a failed run leaves nothing behind.

  layers.py       --layers / --layers-from / --layer-map / --lam parsing
  plan.py         the MAM plan, from headers only (role mapping through the anatomy)
  noise.py        the paper's noise baselines
  mam.py          runs a MAM plan
  stream.py       tensor reads, raw copies and the byte-fed checkpoint writer (numpy, no torch)
  output.py       writes a model directory (weights, sibling files, provenance)
  adapter.py      LoRA adapters in memory: surgeon's own format
  peft_format.py  PEFT adapter directories, read and written
  lora.py         folds an adapter into a base checkpoint
  verify.py       unmerged-vs-merged check on a probe input
"""
