"""Datasets, splits and features for training and evaluation (see docs/data.md).

Names are imported lazily: reading an index (surgeon validate) does not import torch.
"""
from importlib import import_module

_WHERE = {
    "AudioDataset": "dataset", "collate": "dataset",
    "FeatureSpec": "features", "feature_spec_for": "features",
    "DATASETS": "registry", "load_index": "registry",
    "few_shot": "splits", "splits_for": "splits",
    "DatasetIndex": "types", "Item": "types", "Split": "types",
}
__all__ = list(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'surgeon.data' has no attribute {name!r}")
    return getattr(import_module(f"surgeon.data.{_WHERE[name]}"), name)
