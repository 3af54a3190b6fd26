"""Generate the papers' experiment recipes from the tables below (run from the repository root):

    python recipes/generate.py          # rewrites recipes/<name>.toml for every entry

One table per paper keeps the hyper-parameters in one place; the generated files are committed so
users read and copy plain TOML. quickstart.toml is written by hand and never touched here.
Datasets are looked up under $SURGEON_DATA (default ~/data); override with --set data.root=DIR.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Training set-up per dataset (petl-facts.md "Training set-up of the papers").
DATASETS = {
    "esc50": dict(title="ESC-50 (5-fold)", format="esc50", root="${SURGEON_DATA}/ESC-50-master",
                  max_frames=500, epochs=50, batch_size=32, specaugment=True),
    "us8k": dict(title="UrbanSound8K (10-fold)", format="urbansound8k", root="${SURGEON_DATA}/UrbanSound8K",
                 max_frames=400, epochs=30, batch_size=32, specaugment=True),
    "gsc": dict(title="Speech Commands v2 (35 classes)", format="speechcommands",
                root="${SURGEON_DATA}/speech_commands_v0.02", max_frames=100, epochs=75, batch_size=128),
    "fsc": dict(title="Fluent Speech Commands (31 intents)", format="fluent",
                root="${SURGEON_DATA}/fluent_speech_commands_dataset", max_frames=400, epochs=75, batch_size=32),
    # the papers' 10 IEMOCAP folds: leave one session out, each of its two speakers tested in turn
    "iemocap": dict(title="IEMOCAP (4 emotions, leave one session out, 10 speaker folds)", format="iemocap",
                    root="${SURGEON_DATA}/IEMOCAP_full_release", options={"speakers": True},
                    max_frames=800, epochs=20, batch_size=32),
    # paper 004 only (LOAA_DATA below): tested on the labelled validation CSV, validation carved from train
    "epic": dict(title="EPIC-SOUNDS (44 classes)", format="epicsounds", root="${SURGEON_DATA}/EPIC-SOUNDS",
                 max_frames=200, epochs=30, batch_size=128),
}
AST_DATASETS = ("esc50", "us8k", "gsc", "fsc")  # the datasets of papers 000-002's AST tables
SPECAUGMENT = {"freq_mask": 24, "time_mask": 80}

# Paper 002 Table I (and paper 001 Table 1 for the Conformer adapter): AST-base, ~230-540K parameters.
AST_METHODS = {
    "full": ("Full fine-tuning", {"name": "full"}, 5e-5),
    "linear": ("Linear probing", {"name": "linear"}, 1e-3),
    "bitfit": ("BitFit", {"name": "bitfit"}, 5e-3),
    # prompts as the authors' code places them: [CLS, P, patches], AST's DIST token dropped
    "spt300": ("Shallow prompt tuning, 300 prompts", {"name": "prompt", "num_tokens": 300, "deep": False,
                                                      "dist": False}, 1e-2),
    "dpt25": ("Deep prompt tuning, 25 prompts", {"name": "prompt", "num_tokens": 25, "deep": True, "dist": False},
              1e-2),
    "prefix24": ("Prefix tuning, 24 tokens", {"name": "prefix", "num_tokens": 24}, 1e-2),
    "lora": ("LoRA on W_q, W_v, RR 128, alpha 8", {"name": "lora", "reduction": 128, "alpha": 8.0,
                                                  "targets": ["q", "v"]}, 5e-3),
}
for design in ("bottleneck", "convpass"):
    for place, placement in (("pf", "pfeiffer"), ("hou", "houlsby")):
        for ins, insertion in (("par", "parallel"), ("seq", "sequential")):
            AST_METHODS[f"{design}-{place}-{ins}"] = (
                f"{design.capitalize()} adapter, {placement.capitalize()} {insertion}, RR 64",
                {"name": design, "placement": placement, "insertion": insertion, "reduction": 64}, 5e-3)
for place, placement in (("pf", "pfeiffer"), ("hou", "houlsby")):
    AST_METHODS[f"conformer-{place}"] = (
        f"Conformer adapter (paper 001), {placement.capitalize()}, RR 96, kernel 31",
        {"name": "conformer", "placement": placement, "reduction": 96, "kernel": 31}, 5e-3)

# Paper 002's ablations (Tables III-VII; bottleneck RR 64 unless said). Each row: (title, [method tables],
# paper's accuracies by dataset). Table III: where and how a Pfeiffer bottleneck sits; "Seq/Par-After" is one
# row because sequential-after with its residual equals parallel-after.
def _bn(location, insertion, position, **extra):
    return {"name": "bottleneck", "placement": "pfeiffer", "location": location, "insertion": insertion,
            "position": position, "reduction": 64, **extra}


P002_ABLATIONS = {  # name -> (table, row, [method tables], {dataset: paper accuracy})
    "t3-ffn-seq-after": ("III", "FFN-Seq/Par-After", [_bn("ffn", "sequential", "after")],
                         dict(esc50=86.77, us8k=82.86, gsc=91.41, fsc=72.45)),
    "t3-ffn-seq-before": ("III", "FFN-Seq-Before", [_bn("ffn", "sequential", "before")],
                          dict(esc50=54.68, us8k=71.60, gsc=86.80, fsc=61.44)),
    "t3-ffn-par-before": ("III", "FFN-Par-Before", [_bn("ffn", "parallel", "before")],
                          dict(esc50=87.07, us8k=82.72, gsc=90.84, fsc=72.08)),
    "t3-mhsa-seq-after": ("III", "MHSA-Seq/Par-After", [_bn("mhsa", "sequential", "after")],
                          dict(esc50=87.80, us8k=83.08, gsc=89.30, fsc=64.40)),
    "t3-mhsa-seq-before": ("III", "MHSA-Seq-Before", [_bn("mhsa", "sequential", "before")],
                           dict(esc50=76.03, us8k=81.30, gsc=90.74, fsc=73.76)),
    "t3-mhsa-par-before": ("III", "MHSA-Par-Before", [_bn("mhsa", "parallel", "before")],
                           dict(esc50=88.38, us8k=83.44, gsc=91.33, fsc=73.19)),
    # Table IV: LoRA's target matrices at a constant 221K (RR doubles with each added matrix)
    "t4-lora-q": ("IV", "W_q, RR 64", [{"name": "lora", "targets": ["q"], "reduction": 64, "alpha": 8.0}],
                  dict(esc50=83.05, us8k=82.56, gsc=89.08, fsc=61.84)),
    "t4-lora-qk": ("IV", "W_q, W_k, RR 128", [{"name": "lora", "targets": ["q", "k"], "reduction": 128, "alpha": 8.0}],
                   dict(esc50=84.15, us8k=82.35, gsc=91.51, fsc=65.59)),
    "t4-lora-qv": ("IV", "W_q, W_v, RR 128", [{"name": "lora", "targets": ["q", "v"], "reduction": 128, "alpha": 8.0}],
                   dict(esc50=86.45, us8k=83.83, gsc=93.61, fsc=76.00)),
    "t4-lora-qkvo": ("IV", "W_q, W_k, W_v, W_o, RR 256",
                     [{"name": "lora", "targets": ["q", "k", "v", "o"], "reduction": 256, "alpha": 8.0}],
                     dict(esc50=86.15, us8k=83.51, gsc=94.08, fsc=78.90)),
    # Table V (appendix A): a fixed budget; x2 = one adapter of twice the size (RR 32)
    "t5-pf-ffn-seq-after": ("V", "PF FFN-Seq-After (249K)", [_bn("ffn", "sequential", "after")],
                            dict(esc50=86.77, fsc=72.45)),
    "t5-pf-mhsa-par-before": ("V", "PF MHSA-Par-Before (249K)", [_bn("mhsa", "parallel", "before")],
                              dict(esc50=88.38, fsc=73.19)),
    "t5-pf-ffn-seq-after-x2": ("V", "PF FFN-Seq-After x2 (470K)", [_bn("ffn", "sequential", "after", reduction=32)],
                               dict(esc50=87.18, fsc=73.60)),
    "t5-pf-mhsa-par-before-x2": ("V", "PF MHSA-Par-Before x2 (470K)",
                                 [_bn("mhsa", "parallel", "before", reduction=32)], dict(esc50=88.50, fsc=78.19)),
    "t5-hou-seq": ("V", "HOU seq (498K)", [{"name": "bottleneck", "placement": "houlsby", "insertion": "sequential",
                                            "reduction": 64}], dict(esc50=87.75, fsc=76.45)),
    "t5-hou-par": ("V", "HOU par (498K)", [{"name": "bottleneck", "placement": "houlsby", "insertion": "parallel",
                                           "reduction": 64}], dict(esc50=88.00, fsc=78.71)),
    # Table VI (appendix B): combinations through [[method]]; the adapter beside the FFN (DPT and LoRA work on MHSA)
    "t6-lora-r12": ("VI", "LoRA (442K: r = 12, RR 64)",
                    [{"name": "lora", "targets": ["q", "v"], "reduction": 64, "alpha": 8.0}], dict(esc50=86.70, fsc=82.84)),
    "t6-adapter-lora": ("VI", "Adapter + LoRA (470K)",
                        [_bn("ffn", "parallel", "before"), {"name": "lora", "targets": ["q", "v"], "reduction": 128,
                                                            "alpha": 8.0}], dict(esc50=88.00, fsc=81.54)),
    "t6-adapter-dpt25": ("VI", "Adapter + DPT-25 (479K)",
                         [_bn("ffn", "parallel", "before"), {"name": "prompt", "num_tokens": 25, "deep": True,
                                                             "dist": False}], dict(esc50=86.60, fsc=77.15)),
    "t6-adapter-dpt14-lora": ("VI", "Adapter + DPT-14 + LoRA (488K: LoRA RR 256, adapter RR 64)",
                              [_bn("ffn", "parallel", "before"),
                               {"name": "prompt", "num_tokens": 14, "deep": True, "dist": False},
                               {"name": "lora", "targets": ["q", "v"], "reduction": 256, "alpha": 8.0}],
                              dict(esc50=86.80, fsc=79.83)),
    # Table VII (appendix C): residual connections, bottleneck beside the FFN
    "t7-seq-residual": ("VII", "Seq, residual", [_bn("ffn", "sequential", "after", residual=True)],
                        dict(esc50=86.77, fsc=72.45)),
    "t7-seq-no-residual": ("VII", "Seq, no residual", [_bn("ffn", "sequential", "after", residual=False)],
                           dict(esc50=69.20, fsc=56.48)),
    "t7-par-no-residual": ("VII", "Par, no residual", [_bn("ffn", "parallel", "before", residual=False)],
                           dict(esc50=87.07, fsc=72.08)),
    "t7-par-residual": ("VII", "Par, residual", [_bn("ffn", "parallel", "before", residual=True)],
                        dict(esc50=73.20, fsc=69.28)),
}
# The learning rate of a combination: its first method's (prompt tuning's 1e-2 would be a different study)
P002_LR = 5e-3

# Paper 000 Tables 1-2: single adapter b=24 vs Dense/Soft-MoA (b=1, 1 slot), 14 experts per layer: one block
# of 14 (Pfeiffer), or 7 + 7 (Houlsby: num_experts counts one block's, and there is one per sub-layer).
MOA_METHODS = {}
for expert in ("bottleneck", "convpass"):
    tag = "" if expert == "bottleneck" else "-convpass"
    MOA_METHODS[f"single{tag}-b24"] = (
        f"Single {expert} adapter b=24, Pfeiffer parallel (paper 000 baseline)",
        {"name": expert, "placement": "pfeiffer", "insertion": "parallel", "bottleneck": 24})
    for kind in ("dense", "soft"):
        for place, placement, n in (("pf", "pfeiffer", 14), ("hou", "houlsby", 7)):
            opts = {"name": f"{kind}-moa", "placement": placement, "num_experts": n, "bottleneck": 1,
                    "expert": expert}
            if kind == "soft":
                opts["slots"] = 1
            count = f"{n} {expert} experts b=1" if placement == "pfeiffer" else (
                f"{n} + {n} {expert} experts b=1 (num_experts = {n} per block, one beside MHSA, one beside FFN)")
            MOA_METHODS[f"{kind}-moa{tag}-{place}"] = (
                f"{kind.capitalize()}-MoA, {count}, {placement.capitalize()} (paper 000)", opts)

# Paper 001 Table 2: few-shot on ESC-50 and GSC (Pfeiffer adapters); k per class, 3 seeds.
FEW_SHOT = {"esc50": 4, "gsc": 32}
FEW_SHOT_METHODS = {
    "dpt25": AST_METHODS["dpt25"],
    "lora": AST_METHODS["lora"],
    "bottleneck": ("Bottleneck adapter, Pfeiffer parallel, RR 64", AST_METHODS["bottleneck-pf-par"][1], 5e-3),
    "conformer": AST_METHODS["conformer-pf"],
}

# Paper 001 Table 3: wav2vec 2.0 with bottleneck / Conformer adapters (Pfeiffer); IEMOCAP ~900K parameters.
W2V2 = {
    ("bottleneck", "gsc"): {"reduction": 64}, ("bottleneck", "fsc"): {"reduction": 64},
    ("bottleneck", "iemocap"): {"bottleneck": 47},
    ("conformer", "gsc"): {"reduction": 96, "kernel": 31}, ("conformer", "fsc"): {"reduction": 96, "kernel": 31},
    ("conformer", "iemocap"): {"bottleneck": 31, "kernel": 31},
}
W2V2_SECONDS = {"gsc": 1.0, "fsc": 4.0, "iemocap": 8.0}  # the AST lengths (100, 400, 800 frames)

# Paper 004: Look-Aside Adapters on an AST initialised from an ImageNet ViT (no audio pre-training),
# non-overlapping 16x16 patches; ESC-50 25 epochs lr 5e-4, SPC-2 30 epochs lr 2.5e-4 (paper: Adam,
# i.e. no weight decay); AST's input lengths 512 / 128 frames. EPIC-SOUNDS: "the SSAST setup of
# EPIC-SOUNDS" with lr 1e-4, AdamW, 30 epochs, no mixup; from that set-up (the EPIC-SOUNDS baselines'
# SSAST config) 2-second clips (200 frames of 10 ms; SSAST's 400 are at a 5 ms hop), batch 128,
# weight decay 1e-4.
LOAA = {
    "attn-t": ("Attn(T), r=36 (2%)", {"name": "loaa", "placement": "pfeiffer", "location": "mhsa", "axis": "time",
                                       "bottleneck": 36}),
    "ffn-f": ("FFN(F), r=36 (2%)", {"name": "loaa", "placement": "pfeiffer", "location": "ffn", "axis": "frequency",
                                     "bottleneck": 36}),
    "attn-t-ffn-f": ("Attn(T) + FFN(F), r=36 (5%)", {"name": "loaa", "placement": "houlsby",
                                                     "axis": "time,frequency", "bottleneck": 36}),
    "attn-t-ffn-f-r72": ("Attn(T) + FFN(F), r=72 (10%)", {"name": "loaa", "placement": "houlsby",
                                                         "axis": "time,frequency", "bottleneck": 72}),
}
LOAA_DATA = {"esc50": dict(max_frames=512, epochs=25, lr=5e-4, batch_size=48, weight_decay=0.0),
             "gsc": dict(max_frames=128, epochs=30, lr=2.5e-4, batch_size=128, weight_decay=0.0),
             "epic": dict(max_frames=200, epochs=30, lr=1e-4, batch_size=128, weight_decay=1e-4)}
# Paper 004 Table 1 (EPIC-SOUNDS): one LoAA beside ATTN or FFN, kernel (1,1) / F(3,1) / T(1,3) / (3,3), the
# bottleneck r chosen so that each column has the same parameters (2 k d r per adapter, plus the 44-class head):
# 1.035M, 2.026M, 4.017M. (1,1) is a LoAA of kernel 1 (the parallel linear adapter without biases).
LOAA_KERNELS = {"k11": ("(1,1)", "time", 1, 3), "f31": ("F(3,1)", "frequency", 3, 1), "t13": ("T(1,3)", "time", 3, 1),
                "k33": ("(3,3)", "grid", 3, 1 / 3)}  # key -> (column, axis, kernel, r relative to k = 3)
LOAA_SIZES = {"1m": ("1.035M", 18), "2m": ("2.026M", 36), "4m": ("4.017M", 72)}  # r at k = 3
LOAA_TABLE1 = {  # (block, size, kernel) -> paper 004 Table 1 top-1
    ("attn", "1m"): dict(k11=53.38, f31=53.79, t13=53.43, k33=53.20),
    ("attn", "2m"): dict(k11=53.33, f31=54.44, t13=54.52, k33=53.64),
    ("attn", "4m"): dict(k11=53.42, f31=53.86, t13=54.08, k33=53.44),
    ("ffn", "1m"): dict(k11=53.04, f31=53.53, t13=53.42, k33=53.03),
    ("ffn", "2m"): dict(k11=53.42, f31=53.73, t13=54.50, k33=53.30),
    ("ffn", "4m"): dict(k11=53.30, f31=53.73, t13=54.01, k33=53.24),
}
# Paper 004 Table 3 (EPIC-SOUNDS): the four time/frequency pairs on Attn + FFN at 5% (r = 36) and 10% (r = 72)
LOAA_PAIRS = {"t-t": "time,time", "t-f": "time,frequency", "f-t": "frequency,time", "f-f": "frequency,frequency"}

# Paper 004 Table 2's baselines on the same ImageNet AST: full fine-tuning and the linear probe with AST's
# overlapping patches (stride 10: "We use patch overlapping for full fine-tuning"), and the parallel adapter
# of eq. 1 at 5% (r = 108 beside MHSA and FFN: the parameters of Attn(T) + FFN(F) at r = 36, k = 3).
# Learning rates: full fine-tuning 1e-4 on ESC-50 and EPIC-SOUNDS (the paper); SPC-2 and the linear probe
# are not given, so they take the PEFT rate of the dataset.
LOAA_BASELINES = {
    "full": ("Full fine-tuning, overlapping patches", {"name": "full"}, True, {"esc50": 1e-4, "epic": 1e-4}),
    "linear": ("Linear probe, overlapping patches", {"name": "linear"}, True, {}),
    "parallel-r108": ("Parallel adapter r=108 beside MHSA and FFN (5%)",
                      {"name": "bottleneck", "placement": "houlsby", "insertion": "parallel", "bottleneck": 108,
                       "train_norm": False}, False, {}),
}
# ESC-50 in paper 004: "the same data splits as AST": train on the other four folds (data.protocol)
LOAA_PROTOCOL = {"esc50": "kfold-rest"}
# "SPC-2 ... 30 epochs with mixup" (ESC-50 "without mixup"), as AST's Speech Commands recipe: mixup 0.6,
# lambda ~ Beta(10, 10), waveforms mixed before the fbank
LOAA_MIXUP = {"gsc": {"probability": 0.6, "alpha": 10.0, "mix": "waveform"}}

# Paper 003 (MAM) Table 5 on speech recognition: HuBERT-large + BERT-large-uncased, AdamW at 1e-5,
# batch 32; the fine-tuning rows average 3 runs (section 4.2). The MAM rows use the paper's best
# static merges (Table 2, lam chosen on the dev set): layers 12-19 at 0.25 (LJ Speech), all at 0.05 (VCTK).
MAM_DATA = {
    "ljspeech": dict(title="LJ Speech", format="ljspeech", root="${SURGEON_DATA}/LJSpeech-1.1",
                     hint="/path/to/LJSpeech-1.1", epochs=2, table="9.25 / 8.63 / 8.52 / 8.40 / 8.29",
                     lam=0.25, layers=list(range(12, 20)), cli_layers=" --layers 12-19"),
    "vctk": dict(title="VCTK", format="vctk", root="${SURGEON_DATA}/VCTK-Corpus-0.92",
                 hint="/path/to/VCTK-Corpus-0.92", epochs=1, table="5.58 / 5.48 / 5.52 / 5.44 / 5.36",
                 lam=0.05, layers="all", cli_layers=""),
}
MAM_ROWS = {  # name -> (Table 5 row, merge: None / "static" / "learnable", fine-tuned)
    "mam": ("MAM (zero-shot): BERT attention merged into HuBERT, no fine-tuning", "static", False),
    "ft": ("FT: HuBERT fine-tuned with CTC on the target data alone", None, True),
    "mam-ft": ("MAM + FT: the best static merge, then fine-tuning", "static", True),
    "lmam-ft": ("L-MAM + FT: lam learnt per layer together with the weights (eq. 3)", "learnable", True),
}
MAM_SEEDS = [0, 1, 2]  # "results averaged over 3 runs"


def mam_recipe(row: str, ds: str) -> dict:
    d = MAM_DATA[ds]
    title, merge, fine_tuned = MAM_ROWS[row]
    name = f"mam-{row}-{ds}"
    comment = [f'Paper 003 (MAM) Table 5 on {d["title"]}, row "{title}".',
               f"Table 5 WER (%) on {d['title']}, rows baseline / MAM / FT / MAM + FT / L-MAM + FT: {d['table']}", ""]
    if fine_tuned:
        comment += [f"  surgeon train recipes/{name}.toml --set data.root={d['hint']}", "",
                    f"One cell per seed ({', '.join(map(str, MAM_SEEDS))}): the paper averages the fine-tuning rows over "
                    "3 runs; results.json", "gives each metric's mean and standard deviation over them."]
    else:
        comment += ["Zero-shot: nothing is trained. Merge, then evaluate the merged model on the test split:",
                    f"  surgeon merge --source bert --target hubert --lam {d['lam']}{d['cli_layers']} "
                    f"--out hubert-mam-{ds}",
                    f"  surgeon eval recipes/{name}.toml --model hubert-mam-{ds} --set data.root={d['hint']}",
                    "(`surgeon eval ... --model hubert` gives the baseline row; `surgeon compare` the two evaluations",
                    "side by side, paper 003 Tables 4 and 6.) The [merge] table below records the merge; `surgeon",
                    "train` on this recipe would fine-tune, which is the MAM + FT row instead."]
    comment += ["", "Set-up from the paper: HuBERT-large (facebook/hubert-large-ls960-ft) and BERT-large-uncased, both",
                f"24 layers of width 1024; AdamW, learning rate 1e-5, batch size 32, CTC loss, {d['epochs']} epoch(s) on "
                f"{d['title']};",
                "greedy decoding, WER on normalised text (all of the ctc task's metrics are reported: wer, cer,",
                "loss, S/I/D shares). Neither corpus has an official split: surgeon's is a stable 90/5/5 hash of",
                "the file name (docs/speech.md)."]
    train = {"epochs": d["epochs"], "batch_size": 32, "lr": 1e-5, "weight_decay": 0.01, "scheduler": "constant"}
    if merge == "learnable":
        comment += ["", "L-MAM: the weights at the paper's 1e-5; lam (the \"method\" group: <layer>.surgeon_lmam.raw,",
                    "lam = a sigmoid of it, no weight decay) needs a larger rate to move at all in one or two epochs;",
                    "1e-2 moves lam about 1e-3 per step near 0.1. The paper does not give lam's rate."]
        train["lr"] = {"backbone": 1e-5, "head": 1e-5, "method": 1e-2}
    if fine_tuned:
        train["seeds"] = list(MAM_SEEDS)
    doc = {"_comment": comment, "model": {"ref": "hubert", "task": "ctc"}, "method": {"name": "full"}}
    if merge == "static":
        doc["merge"] = {"source": "bert", "learnable": False, "init_lam": d["lam"], "layers": d["layers"]}
    elif merge == "learnable":
        doc["merge"] = {"source": "bert", "learnable": True, "init_lam": 0.1, "layers": "all"}
    doc["data"] = {"format": d["format"], "root": d["root"], "protocol": "official"}
    doc["train"] = train
    doc["eval"] = {"select": "wer"}
    return doc


# Paper 003 (MAM) on audio event classification: ViT-base (ImageNet) merged into BEATs (AudioSet), both 12
# layers of width 768; ESC-50 error (%). Table 1: lam 0.1 on all layers 11.50 (baseline 11.75); Table 2: best
# block layers 4-11 at 0.1, 10.50; Table 5: FT AdamW 1e-3, 3 epochs, batch 32 (3 runs), rows baseline / MAM /
# FT / MAM + FT / L-MAM + FT: 11.75 / 10.50 / 9.50 / 7.75 / 7.75.
AEC_TABLE = "11.75 / 10.50 / 9.50 / 7.75 / 7.75"
AEC_ROWS = {  # name -> (title, paper source, merge: None / (layers, lam) / "learnable", fine-tuned)
    "mam": ("MAM (zero-shot): ViT attention merged into BEATs on all layers at lam 0.1",
            "Table 1 (lam 0.1, all layers): 11.50% error; baseline 11.75%", ("all", 0.1), False),
    "mam-4-11": ("MAM (zero-shot): ViT attention merged into BEATs on layers 4-11 at lam 0.1",
                 "Table 2 (layers 4-11, lam 0.1): 10.50% error, the best zero-shot merge", (list(range(4, 12)), 0.1),
                 False),
    "ft": ("FT: BEATs fine-tuned on ESC-50 alone", "Table 5, FT row: 9.50% error", None, True),
    "mam-ft": ("MAM + FT: the best static merge (layers 4-11 at 0.1), then fine-tuning",
               "Table 5, MAM + FT row: 7.75% error", (list(range(4, 12)), 0.1), True),
    "lmam-ft": ("L-MAM + FT: lam learnt per layer together with the weights (eq. 3)",
                "Table 5, L-MAM + FT row: 7.75% error (18.42% relative to FT)", "learnable", True),
}
BEATS_REF = "${SURGEON_DATA}/BEATs/BEATs_iter3.pt"  # the authors' file (not on the Hub): put it there


def aec_recipe(row: str) -> dict:
    title, source, merge, fine_tuned = AEC_ROWS[row]
    name = f"aec-{row}-esc50"
    comment = [f'Paper 003 (MAM) on ESC-50, row "{title}".', f"{source}.",
               f"Table 5 error (%) on ESC-50, rows baseline / MAM / FT / MAM + FT / L-MAM + FT: {AEC_TABLE}", ""]
    if fine_tuned:
        comment += [f"  surgeon train recipes/{name}.toml", "",
                    f"One cell per seed ({', '.join(map(str, MAM_SEEDS))}): the paper averages the fine-tuning rows "
                    "over 3 runs."]
    else:
        layers = "" if merge[0] == "all" else " --layers 4-11"
        comment += ["Zero-shot: nothing is trained. Merge, then evaluate the merged model (the paper evaluates",
                    "BEATs with a classifier for ESC-50's classes; it does not say how that head was made):",
                    f"  surgeon merge --source vit --target BEATs_iter3.pt --allow-pickle --lam {merge[1]}{layers} "
                    f"--out beats-{row}.pt",
                    "The [merge] table below records the merge; `surgeon train` on this recipe would fine-tune,",
                    "which is the MAM + FT row instead."]
    comment += ["", "Set-up from the paper: BEATs (AudioSet) and ViT-base (ImageNet, google/vit-base-patch16-224),",
                "12 layers of width 768; AdamW, learning rate 1e-3, 3 epochs, batch size 32; a new Linear head",
                "over the mean of the kept tokens, softmax cross-entropy. BEATs' files are pickles: allow_pickle.",
                f"model.ref: {BEATS_REF} (--set model.ref=PATH for another place or iter)."]
    train = {"epochs": 3, "batch_size": 32, "lr": 1e-3}
    if fine_tuned:
        train["seeds"] = list(MAM_SEEDS)
    doc = {"_comment": comment, "model": {"ref": BEATS_REF, "task": "classification", "allow_pickle": True},
           "method": {"name": "full"}}
    if merge == "learnable":
        doc["merge"] = {"source": "vit", "learnable": True, "init_lam": 0.1, "layers": "all"}
    elif merge is not None:
        doc["merge"] = {"source": "vit", "learnable": False, "init_lam": merge[1], "layers": merge[0]}
    doc["data"] = data_table("esc50", waveform=True, max_seconds=5.0)
    doc["train"] = train
    return doc


def data_table(ds: str, **changes) -> dict:
    d = DATASETS[ds]
    table = {"format": d["format"], "root": d["root"]}
    if "options" in d:
        table["options"] = dict(d["options"])
    if changes.get("waveform"):
        seconds = changes.get("max_seconds")
        if seconds:
            table["max_seconds"] = seconds
    else:
        table["max_frames"] = changes.get("max_frames", d["max_frames"])
        if d.get("specaugment"):
            table["specaugment"] = dict(SPECAUGMENT)
    if "few_shot" in changes:
        table["few_shot"] = changes["few_shot"]
    return table


def recipe(description: str, source: str, model: dict, method: dict, data: dict, train: dict,
           head: str = "mean") -> dict:
    """head: papers 000-002's is "mean", a Linear over the mean of the output sequence after the final
    LayerNorm (surgeon.heads); paper 004 builds on AST's code, whose head is transformers' "pooled" one
    (its count, "LayerNorm + Linear", is that head's)."""
    return {"_comment": [description, source], "model": {**model, "head": head}, "method": method, "data": data,
            "train": train}


def all_recipes() -> dict[str, dict]:
    out = {}
    for ds in AST_DATASETS:
        d = DATASETS[ds]
        for key, (title, method, lr) in AST_METHODS.items():
            out[f"ast-{key}-{ds}"] = recipe(
                f"AST + {title} on {d['title']}", "Paper 002 Table I / paper 001 Table 1; petl-facts.md set-up.",
                {"ref": "ast", "task": "classification"}, method, data_table(ds),
                {"epochs": d["epochs"], "batch_size": d["batch_size"], "lr": lr})
        for key, (title, method) in MOA_METHODS.items():
            out[f"ast-{key}-{ds}"] = recipe(
                f"AST + {title} on {d['title']}", "Paper 000 Tables 1-2; petl-facts.md set-up.",
                {"ref": "ast", "task": "classification"}, method, data_table(ds),
                {"epochs": d["epochs"], "batch_size": d["batch_size"], "lr": 5e-3})
    for ds, k in FEW_SHOT.items():
        d = DATASETS[ds]
        for key, (title, method, lr) in FEW_SHOT_METHODS.items():
            out[f"fewshot-ast-{key}-{ds}"] = recipe(
                f"Few-shot ({k} per class, 3 seeds): AST + {title} on {d['title']}",
                f"Paper 001 Table 2 (k = 1/2/4/8 on ESC-50, 2/8/32/64 on GSC: --set data.few_shot.k=K).",
                {"ref": "ast", "task": "classification"}, method,
                data_table(ds, few_shot={"k": k, "seeds": [0, 1, 2]}),
                {"epochs": d["epochs"], "batch_size": d["batch_size"], "lr": lr})
    for ds in W2V2_SECONDS:  # Table 3's FFT and Linear rows
        d = DATASETS[ds]
        for key, title, lr in (("full", "full fine-tuning", 5e-5), ("linear", "linear probe", 1e-3)):
            out[f"w2v2-{key}-{ds}"] = recipe(
                f"wav2vec 2.0, {title}, on {d['title']}", "Paper 001 Table 3.",
                {"ref": "wav2vec2", "task": "classification"}, {"name": key},
                data_table(ds, waveform=True, max_seconds=W2V2_SECONDS[ds]),
                {"epochs": d["epochs"], "batch_size": d["batch_size"], "lr": lr})
    for (design, ds), opts in W2V2.items():
        d = DATASETS[ds]
        method = {"name": design, "placement": "pfeiffer", **opts}
        out[f"w2v2-{design}-{ds}"] = recipe(
            f"wav2vec 2.0 + {design} adapter (Pfeiffer) on {d['title']}", "Paper 001 Table 3.",
            {"ref": "wav2vec2", "task": "classification"}, method,
            data_table(ds, waveform=True, max_seconds=W2V2_SECONDS[ds]),
            {"epochs": d["epochs"], "batch_size": d["batch_size"], "lr": 5e-3})
    for ds, setup in LOAA_DATA.items():
        for key, (title, method) in LOAA.items():
            out[f"loaa-imagenet-ast-{key}-{ds}"] = loaa_recipe(
                ds, f"Look-Aside Adapter {title}", "Paper 004 Table 2" + (" (and Tables 1, 3)." if ds == "epic" else "."),
                method, setup["lr"], overlapping=False)
        for key, (title, method, overlapping, lrs) in LOAA_BASELINES.items():
            out[f"imagenet-ast-{key}-{ds}"] = loaa_recipe(
                ds, title, "Paper 004 Table 2 (baseline).", method, lrs.get(ds, setup["lr"]), overlapping=overlapping)
    for key, (table, row, methods, scores) in P002_ABLATIONS.items():
        for ds, score in scores.items():
            d = DATASETS[ds]
            doc = recipe(f"AST + {row} on {d['title']}",
                         f"Paper 002 Table {table}, row \"{row}\": {score} (paper's accuracy, %).",
                         {"ref": "ast", "task": "classification"}, methods[0], data_table(ds),
                         {"epochs": d["epochs"], "batch_size": d["batch_size"], "lr": P002_LR})
            if len(methods) > 1:
                doc["method"] = methods
            out[f"p002-{key}-{ds}"] = doc
    for (block, size), scores in LOAA_TABLE1.items():
        for kernel, score in scores.items():
            column, axis, k, scale = LOAA_KERNELS[kernel]
            label, r3 = LOAA_SIZES[size]
            r = round(r3 * scale)
            method = {"name": "loaa", "placement": "pfeiffer", "location": "mhsa" if block == "attn" else "ffn",
                      "axis": axis, "kernel": k, "bottleneck": r}
            out[f"loaa-imagenet-ast-t1-{block}-{kernel}-{size}-epic"] = loaa_recipe(
                "epic", f"Look-Aside Adapter {column} beside {block.upper()}, r={r} ({label})",
                f"Paper 004 Table 1, {block.upper()} block, {label}, kernel {column}: {score} (top-1, %).",
                method, LOAA_DATA["epic"]["lr"], overlapping=False)
    for pair, axes in LOAA_PAIRS.items():
        for pct, r in (("5", 36), ("10", 72)):
            out[f"loaa-imagenet-ast-t3-{pair}-{pct}-epic"] = loaa_recipe(
                "epic", f"Look-Aside Adapters Attn({axes.split(',')[0][0].upper()}) + FFN({axes.split(',')[1][0].upper()}),"
                f" r={r} ({pct}%)", "Paper 004 Table 3.",
                {"name": "loaa", "placement": "houlsby", "axis": axes, "bottleneck": r}, LOAA_DATA["epic"]["lr"],
                overlapping=False)
    for ds in MAM_DATA:
        for row in MAM_ROWS:
            out[f"mam-{row}-{ds}"] = mam_recipe(row, ds)
    for row in AEC_ROWS:
        out[f"aec-{row}-esc50"] = aec_recipe(row)
    return out


def loaa_recipe(ds: str, title: str, source: str, method: dict, lr: float, *, overlapping: bool) -> dict:
    """A paper 004 recipe: the ImageNet-initialised AST (strides 16 unless overlapping), the dataset's set-up."""
    d, setup = DATASETS[ds], LOAA_DATA[ds]
    model = {"init": "imagenet-vit", "vit_ref": "vit", "task": "classification"}
    if not overlapping:
        model["config"] = {"frequency_stride": 16, "time_stride": 16}
    data = data_table(ds, max_frames=setup["max_frames"])
    if ds in LOAA_PROTOCOL:
        data["protocol"] = LOAA_PROTOCOL[ds]
    if ds in LOAA_MIXUP:
        data["mixup"] = LOAA_MIXUP[ds]
    return recipe(f"{title} on an ImageNet-initialised AST, {d['title']}", source, model, method, data,
                  {"epochs": setup["epochs"], "batch_size": setup["batch_size"], "lr": lr,
                   "weight_decay": setup["weight_decay"]}, head="pooled")


def render(doc: dict) -> str:
    from surgeon.recipes.load import to_toml

    lines = [f"# {c}".rstrip() for c in doc["_comment"]]
    lines.append("# Generated by recipes/generate.py: edit the tables there, not this file.")
    lines.append("# Datasets are read from $SURGEON_DATA (default ~/data); override with --set data.root=DIR.")
    body = {k: v for k, v in doc.items() if k != "_comment"}
    return "\n".join(lines) + "\n\n" + to_toml(body)


def main(argv: list[str]) -> int:
    from surgeon.io.atomic import write_text_atomic

    recipes = all_recipes()
    for name, doc in recipes.items():
        write_text_atomic(HERE / f"{name}.toml", render(doc), force=True)
    print(f"wrote {len(recipes)} recipes to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
