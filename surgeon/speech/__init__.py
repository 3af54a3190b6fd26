"""Speech recognition (CTC) jobs and paper 003's data-driven layer selection and Learnable-MAM.

text.py        vocabularies of CTC checkpoints and transcript normalisation
metrics.py     WER / CER with the substitution / insertion / deletion breakdown
compare.py     `surgeon compare`: two evaluations utterance by utterance (paper 003 Tables 4, 6)
decode.py      greedy CTC decoding
datasets.py    LJ Speech, VCTK, path,text manifests, synthetic speech for tests
ctc_task.py    the "ctc" task of the training loop
select_layers.py  `surgeon select-layers` (paper 003 section 4.1)
learnable_mam.py  Learnable-MAM (paper 003 eq. 3)
"""
