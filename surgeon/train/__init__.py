"""Fine-tuning and evaluation from recipes (issues 5 and 7).

tasks.py     what differs between tasks (classification, CTC): head, loss, metrics; the TASKS table (lazy)
optim.py     AdamW with a learning rate per parameter group, cosine schedule stepped per batch
dist.py      device, precision and TF32; the process group; sums and gathers across processes
launch.py    --nproc / --nnodes: relaunch through torch's elastic launcher, one error line back
sampling.py  the global batch split across processes; sharded evaluation
model.py     a recipe's model: load / tiny / saved surgery, positions, head, attention, merge, method
cells.py     a cell (a split x a seed), shared by the run and the Slurm plan
loop.py      one training cell: CellTrainer's set-up, epoch, step, selection, checkpoints, early stops
loggers.py   metrics.jsonl, TensorBoard and CSV ([log] to): every logger gets the same metrics lines
resume.py    what a training checkpoint holds; taking and restoring it
workdir.py   the work directory of a run in progress: fresh or resumed, renamed into place at the end
signals.py   SIGINT/SIGTERM: checkpoint, then exit
slurm.py     --launcher slurm: the job plan, the sbatch script, submission (slurm_job.py: the job)
experts.py   Dense/Soft-MoA expert contributions (paper 000 Fig. 2 right, Fig. 3)
plots.py     PNG curves and heatmaps (matplotlib Agg)
runs.py      the run directory: resolved recipe, metrics.jsonl, results.json, checkpoints, plots
"""
