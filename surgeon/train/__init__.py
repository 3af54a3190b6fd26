"""Fine-tuning and evaluation from recipes (issue 5).

tasks.py   what differs between tasks (classification, CTC): head, loss, metrics; the TASKS table
optim.py   AdamW with a learning rate per parameter group, cosine schedule stepped per batch
dist.py    device and precision, single process or torchrun
model.py   a recipe's model: load / tiny / saved surgery, positions, head, merge, PETL method
loop.py    one training cell (a fold x seed): epochs, validation, best-epoch selection, test
experts.py Dense/Soft-MoA expert contributions (paper 000 Fig. 2 right, Fig. 3)
plots.py   PNG curves and heatmaps (matplotlib Agg)
runs.py    the run directory: resolved recipe, metrics.jsonl, results.json, checkpoints, plots
"""
