"""AudioDataset: items -> model inputs, through the feature cache; and `collate` for a DataLoader.

Errors: a missing or unreadable file stops with a SurgeonError naming the path (on_error="raise"),
or is skipped and counted (on_error="skip"). Files are checked when the dataset is built (existence
and header; items already in the cache are known good) so most problems surface before training;
a file whose samples fail to decode later is handled the same way at its first read, and `collate`
reports those keys in batch["skipped"] so a loop with worker processes can count them too.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from surgeon.data.augment import spec_augment
from surgeon.data.cache import FeatureCache, file_stamp
from surgeon.data.features import FeatureSpec, compute_features, load_audio, resample
from surgeon.data.types import Item
from surgeon.errors import SurgeonError

ON_ERROR = ("raise", "skip")


class AudioDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        items: list[Item],
        spec: FeatureSpec,
        cache_dir: Path | None = None,
        on_error: str = "raise",
        train: bool = False,
        seed: int = 0,
        synthetic=None,
        precheck: bool = True,
        mixup=None,
    ):
        if on_error not in ON_ERROR:
            raise SurgeonError(f"data.on_error: unknown value {on_error!r}; expected 'raise' or 'skip'")
        self.spec = spec
        self.cache = FeatureCache(Path(cache_dir).expanduser(), spec.cache_key()) if cache_dir is not None else None
        self.on_error = on_error
        self.train = train
        self.seed = seed
        self.synthetic = synthetic
        self.mixup = mixup if mixup is not None and mixup.active and train else None  # surgeon.data.mixup.MixupSpec
        self.epoch = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.skipped: list[str] = []  # keys of skipped items
        self.errors: list[str] = []  # their one-line reasons
        if any(item.path is None for item in items) and synthetic is None:
            raise SurgeonError("data: items without an audio path need their synthetic source (index.synthetic)")
        self.items = [item for item in items if not precheck or self._readable(item)]

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Different SpecAugment masks per epoch, the same ones in every run."""
        self.epoch = epoch

    # -- errors ----------------------------------------------------------------------------------
    def _fail(self, item: Item, error: SurgeonError) -> None:
        if self.on_error == "raise":
            raise error
        self.skipped.append(item.key)
        self.errors.append(str(error))

    def _readable(self, item: Item) -> bool:
        if item.path is None:
            return True
        try:
            stamp = file_stamp(item.path)
        except OSError:
            self._fail(item, SurgeonError(f"{item.path}: audio file not found"))
            return False
        if self.cache is not None and self.cache.entry(item, stamp).is_file():
            return True
        import soundfile as sf

        from surgeon.data.features import check_audio_header

        try:
            info = sf.info(str(item.path))
            check_audio_header(item.path, info.samplerate, info.frames, info.channels)
        except SurgeonError as e:
            self._fail(item, e)
            return False
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            self._fail(item, SurgeonError(f"{item.path}: cannot read audio ({reason})"))
            return False
        return True

    # -- features --------------------------------------------------------------------------------
    def _raw(self, item: Item):
        if item.path is None:
            wav = torch.from_numpy(self.synthetic.render(item))
            return resample(wav, self.synthetic.sample_rate, self.spec.sample_rate)
        return load_audio(item.path, self.spec.sample_rate, item.start, item.end)

    def features(self, item: Item):
        """Features of one item (cached), without augmentation. Raises SurgeonError on bad audio."""
        entry = None
        if self.cache is not None:
            try:
                stamp = self.synthetic.fingerprint() if item.path is None else file_stamp(item.path)
            except OSError:
                raise SurgeonError(f"{item.path}: audio file not found") from None
            entry = self.cache.entry(item, stamp)
            cached = self.cache.get(entry)
            if cached is not None:
                self.cache_hits += 1
                return cached, True
        x = compute_features(self._raw(item), self.spec)
        self.cache_misses += 1
        if entry is not None:
            self.cache.put(entry, x)
        return x, False

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        target = None
        try:
            if self.mixup is not None:
                x, hit, target = self._mixed(item)
            else:
                x, hit = self.features(item)
        except SurgeonError as e:
            self._fail(item, e)
            return {"skipped": item.key, "error": str(e)}
        if self.train and self.spec.augments:
            x = spec_augment(x, self.spec.freq_mask, self.spec.time_mask, self._mask_seed(item))
        out = {"input_values": x, "labels": item.label, "key": item.key, "cache_hit": hit}
        if target is not None:
            out["targets"] = target
        if item.text is not None:
            out["text"] = item.text
        return out

    def _mixed(self, item: Item):
        """(features, cache hit, soft target) of a training item under [data.mixup]; a partner that
        cannot be read leaves the item unmixed when data.on_error = 'skip' (it is skipped on its own turn)."""
        from surgeon.data import mixup
        from surgeon.data.features import compute_features

        spec = self.mixup
        d = mixup.draw(spec, self.seed, self.epoch, item.key, len(self.items))
        if d is None:
            x, hit = self.features(item)
            return x, hit, mixup.one_hot(item.label, spec.num_classes)
        partner = self.items[d.partner]
        try:
            if spec.mix == "waveform":
                x, hit = compute_features(mixup.mix(self._raw(item), self._raw(partner), d.lam), self.spec), False
            else:
                x, hit = self.features(item)
                x = mixup.mix(x, self.features(partner)[0], d.lam)
        except SurgeonError:
            if self.on_error == "raise":
                raise
            x, hit = self.features(item)
            return x, hit, mixup.one_hot(item.label, spec.num_classes)
        return x, hit, mixup.soft_target(item.label, partner.label, d.lam, spec.num_classes)

    def _mask_seed(self, item: Item) -> int:
        h = hashlib.sha256(f"{self.seed}\0{self.epoch}\0{item.key}".encode()).digest()
        return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def collate(batch: list[dict]) -> dict:
    """Stack a batch: input_values [B, frames, mel] or [B, samples] (+ attention_mask when waveforms
    differ in length), labels [B], keys, skipped (keys skipped at read time), cache_hits (count)."""
    skipped = [b["skipped"] for b in batch if "skipped" in b]
    good = [b for b in batch if "skipped" not in b]
    out = {
        "keys": [b["key"] for b in good],
        "labels": torch.tensor([b["labels"] for b in good], dtype=torch.long),
        "skipped": skipped,
        "cache_hits": sum(bool(b.get("cache_hit")) for b in good),
    }
    if not good:  # every item of the batch was skipped: the loop should move on
        out["input_values"] = torch.empty(0)
        return out
    xs = [b["input_values"] for b in good]
    lengths = [x.shape[0] for x in xs]
    if xs[0].dim() == 1 and len(set(lengths)) > 1:
        longest = max(lengths)
        out["input_values"] = torch.stack([torch.nn.functional.pad(x, (0, longest - x.shape[0])) for x in xs])
        mask = torch.zeros(len(xs), longest, dtype=torch.long)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        out["attention_mask"] = mask
    else:
        out["input_values"] = torch.stack(xs)
    if any("text" in b for b in good):
        out["text"] = [b.get("text") for b in good]
    if "targets" in good[0]:  # soft labels of a mixup batch
        out["targets"] = torch.stack([b["targets"] for b in good])
    return out
