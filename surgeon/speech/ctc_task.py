"""The "ctc" task of the training loop: a speech encoder's ...ForCTC model (each family's class is in its
anatomy record, `Family.tasks["ctc"]`) fine-tuned with CTC loss and
evaluated by WER and CER with greedy decoding (see surgeon.train.tasks for the protocol).

- Vocabulary: the checkpoint's vocab.json (surgeon.speech.text). A model built from a config without
  tokenizer files (a tiny model) whose head has 32 outputs gets the LibriSpeech character vocabulary
  of the paper's checkpoint; any other size without vocab.json is an error.
- Loss: torch's CTC loss on log-softmax in float32, blank = the pad token, per-utterance loss divided
  by its target length and averaged over the batch (reduction "mean"), infinite losses (an
  utterance too short for its transcript) zeroed.
- Frames: the waveform attention mask gives each utterance's number of output frames; padding frames
  are excluded from the loss and from decoding. Models trained without a mask (a group-norm feature
  encoder: the base checkpoints; `Family.padding_mask`) do not receive it.
- Metrics: "wer", "cer", "loss", and the share of substitutions, insertions and deletions among the
  word errors ("word_sub_share", ...) and the character errors ("char_sub_share", ...), paper 003
  Table 6. References and hypotheses are normalised with surgeon.speech.text's "vocab" choice.
- Details (`CTCTally.details()`, saved as <run>/details/<cell>-test.json and in `surgeon eval`'s
  output): every utterance with its transcript, decoded text, normalised reference and hypothesis and
  raw word/character S/I/D counts, plus the worst utterances (Table 4); `surgeon compare` reads them.
"""
from __future__ import annotations

from collections import Counter

import torch

from surgeon.errors import SurgeonError
from surgeon.speech import metrics
from surgeon.speech.decode import greedy_decode
from surgeon.speech.text import DEFAULT_NORMALIZATION, LIBRISPEECH_CHARS, Vocab, normalization

WORST = 10
DETAILS_FORMAT = "surgeon-asr-utterances/1"  # what CTCTally.details() returns (read by surgeon compare)


def vocab_for(model) -> Vocab:
    """The vocabulary of a loaded CTC model: its directory's vocab.json, else LibriSpeech's (32)."""
    from pathlib import Path

    where = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    if where and (Path(where) / "vocab.json").is_file():
        vocab = Vocab.from_model_dir(where)
    elif model.config.vocab_size == len(LIBRISPEECH_CHARS):
        vocab = Vocab.librispeech()
    else:
        raise SurgeonError(f"model: {where or type(model).__name__} has no vocab.json and its head has "
                           f"{model.config.vocab_size} outputs; a CTC model needs its tokenizer files")
    if vocab.size != model.config.vocab_size:
        raise SurgeonError(f"model: vocab.json has {vocab.size} tokens but the CTC head has {model.config.vocab_size} outputs")
    return vocab


def _unwrap(model):
    return getattr(model, "module", model)  # DistributedDataParallel


class CTCTally:
    """Transcripts and decoded hypotheses as they come (normalised only when scored, so that the
    details can say which normalisation scored them)."""

    def __init__(self, vocab: Vocab, normalization: str = DEFAULT_NORMALIZATION):
        self.vocab = vocab
        self.normalization = normalization
        self.keys, self.texts, self.decoded = [], [], []
        self.loss_sum, self.count = 0.0, 0

    def add(self, outputs, batch, loss: float) -> None:
        texts = _texts(batch)
        self.decoded += greedy_decode(outputs, self.vocab, batch.get("output_lengths"))
        self.texts += texts
        self.keys += list(batch.get("keys") or [str(len(self.keys) + i) for i in range(len(texts))])
        self.loss_sum += float(loss) * len(texts)
        self.count += len(texts)

    def merge(self, other: "CTCTally") -> None:
        self.keys += other.keys
        self.texts += other.texts
        self.decoded += other.decoded
        self.loss_sum += other.loss_sum
        self.count += other.count

    def state_dict(self) -> dict:
        return {"keys": self.keys, "texts": self.texts, "decoded": self.decoded, "loss_sum": self.loss_sum,
                "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.keys = list(state["keys"])
        # "refs"/"hyps": checkpoints written before the raw texts were kept (normalised, still valid)
        self.texts = list(state.get("texts", state.get("refs", [])))
        self.decoded = list(state.get("decoded", state.get("hyps", [])))
        self.loss_sum, self.count = state["loss_sum"], state["count"]

    def details(self) -> dict:
        """The scored utterances (DETAILS_FORMAT): corpus WER/CER with S/I/D, and per utterance its
        key, transcript, decoded text, normalised reference and hypothesis and raw S/I/D counts."""
        rule = normalization(self.normalization).resolved(self.vocab)
        refs = [self.vocab.normalize(t, rule) for t in self.texts]
        hyps = [self.vocab.normalize(h, rule) for h in self.decoded]
        rep = metrics.report(self.keys, refs, hyps, worst=WORST)
        for utt, transcript, decoded in zip(rep["utterances"], self.texts, self.decoded):
            utt["transcript"], utt["decoded"] = transcript, decoded
        unspellable = Counter()
        for transcript in self.texts:
            unspellable.update(self.vocab.unspellable(transcript))
        return {"format": DETAILS_FORMAT, "normalization": rule.describe(), **rep,
                # characters of the references the vocabulary cannot spell: scored as errors
                "unspellable": dict(unspellable.most_common())}

    def result(self) -> dict[str, float]:
        rep = self.details()
        out = {"wer": rep["wer"], "cer": rep["cer"], "loss": self.loss_sum / self.count if self.count else 0.0}
        for level in ("word", "char"):
            for kind, share in rep[f"{level}_edits"]["shares"].items():
                out[f"{level}_{kind[:3]}_share"] = share
        return out


def _texts(batch) -> list[str]:
    texts = batch.get("text")
    if texts is None:
        raise SurgeonError("data: the ctc task needs transcripts (items with text), e.g. data.format = 'ljspeech'")
    return list(texts)


class CTCTask:
    name = "ctc"
    # the S/I/D shares describe the errors; they are not for picking an epoch, hence no direction
    SHARES = tuple(f"{level}_{kind}_share" for level in ("word", "char") for kind in ("sub", "ins", "del"))
    metrics = ("wer", "cer", "loss", *SHARES)
    higher_is_better = {"wer": False, "cer": False, "loss": False}

    def __init__(self):
        self.vocab: Vocab | None = None  # bound to the model by prepare()

    AUTO = {"speech": "AutoModelForCTC"}  # for model types read through another family's layout

    def model_class(self, family: str, model_type: str | None = None) -> str | None:
        from surgeon.train.tasks import families_with, model_class_of

        cls = model_class_of(family, self, model_type)
        if cls is None:
            raise SurgeonError(f"model.task = 'ctc' needs a speech model with a CTC head "
                               f"({', '.join(families_with(self.name))}), not {family}")
        return cls

    def prepare(self, model, labels: list[str]) -> None:
        if not hasattr(_unwrap(model), "lm_head"):
            raise SurgeonError(f"model: {type(model).__name__} has no CTC head (load it as a ...ForCTC model)")
        self.vocab = vocab_for(model)

    def _vocab(self, model) -> Vocab:
        if self.vocab is None:
            self.vocab = vocab_for(_unwrap(model))
        return self.vocab

    def forward(self, model, batch):
        m = _unwrap(model)
        self._vocab(m)
        from surgeon.hf import family_of_model

        mask = batch.get("attention_mask")
        pass_mask = mask is not None and family_of_model(m).takes_padding_mask(vars(m.config))
        logits = model(batch["input_values"], attention_mask=mask if pass_mask else None).logits
        frames = logits.shape[1]
        if mask is not None:
            lengths = m._get_feat_extract_output_lengths(mask.sum(-1)).clamp(max=frames)
        else:
            lengths = torch.full((logits.shape[0],), frames, dtype=torch.long, device=logits.device)
        batch["output_lengths"] = lengths  # read by loss() and the tally
        return logits

    def loss(self, outputs, batch):
        vocab = self.vocab
        targets = [torch.tensor(vocab.encode(t), dtype=torch.long) for t in _texts(batch)]
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        flat = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
        log_probs = outputs.float().log_softmax(-1).transpose(0, 1)  # [frames, batch, vocab]
        return torch.nn.functional.ctc_loss(
            log_probs, flat.to(outputs.device), batch["output_lengths"], target_lengths.to(outputs.device),
            blank=vocab.blank, reduction="mean", zero_infinity=True,
        )

    def new_tally(self, num_labels: int) -> CTCTally:
        if self.vocab is None:
            raise SurgeonError("ctc task: prepare(model) must run before evaluation")
        return CTCTally(self.vocab)
