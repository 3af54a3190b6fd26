"""Streaming merges on one seam: Multimodal Attention Merging (paper 003), its noise baselines, LoRA
folding and the multi-model merges (linear, task arithmetic, TIES, DARE, SLERP).

Every method builds a plan (seam.Plan) from the checkpoints' headers: for each output tensor, its
inputs and a combine function, or a bit-for-bit copy. One streaming runner writes any plan, one
tensor at a time (unchanged tensors copied file to file, merged ones combined in float32), a complete
model directory inside `atomic_output`: memory stays at a few tensors whatever the model size, and a
failed run leaves nothing behind.

  seam.py         the plan (ops: inputs + combine), its peak-memory estimate, the streaming runner
  pairs.py        MAM at the level of roles: target layer/role/leaf <- source tensor, lam (shared by
                  the file runner, the in-memory runner and Learnable-MAM)
  layers.py       --layers / --layers-from / --layer-map / --lam (and recipe layers / init_lam) parsing
  plan.py         the MAM file plan (pairs -> ops), --source / noise parsing
  mam.py          MAM's combine function (lerp), the noise ops, the in-memory runner
  noise.py        the paper's noise baselines: per-model or per-tensor statistics
  multi.py        merges of several models from a TOML config (config.py) with a method (methods/)
  tasks.py        the per-tensor task a multi-model method combines
  methods/        one module per multi-model method, registered by name
  stream.py       tensor reads, raw copies and the byte-fed checkpoint writer (numpy, no torch)
  output.py       writes a model directory (weights, sibling files, provenance)
  adapter.py      LoRA adapters in memory: surgeon's own format
  peft_format.py  PEFT adapter directories, read and written
  lora.py         LoRA folding as a plan on the seam
  verify.py       unmerged-vs-merged check on a probe input
"""
