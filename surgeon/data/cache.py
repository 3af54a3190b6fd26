"""On-disk feature cache: features are computed once per (item, file state, feature settings).

Layout: <cache_dir>/<spec.cache_key()>/<hash[:2]>/<hash>.safetensors, where hash covers the item key,
the file's size and modification time (or the synthetic source's fingerprint) and the feature
settings. Changing any feature setting points at a fresh sub-folder; editing a file misses its entry.
Entries are written to a temporary name and renamed, so parallel workers never read half a file.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from surgeon.data.types import Item
from surgeon.errors import SurgeonError


class FeatureCache:
    def __init__(self, directory: Path, spec_key: str):
        self.directory = Path(directory) / spec_key
        self.spec_key = spec_key
        try:  # a folder that cannot hold the cache (/proc, read-only, a file) is one line, before any item
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise SurgeonError(f"data.cache_dir {directory}: cannot write the feature cache there "
                               f"({e.strerror or e}); name a writable folder or set data.cache = false") from None

    def entry(self, item: Item, stamp: str) -> Path:
        h = hashlib.sha256(f"{item.key}\0{stamp}\0{self.spec_key}".encode()).hexdigest()
        return self.directory / h[:2] / f"{h}.safetensors"

    def get(self, path: Path):
        if not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            return load_file(str(path))["features"]
        except Exception:  # a damaged entry is recomputed, never trusted
            return None

    def put(self, path: Path, features) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"features": features.contiguous()}, str(tmp))
        os.replace(tmp, path)


def file_stamp(path: Path) -> str:
    """Size and modification time: a changed file misses its cache entry. Raises OSError if absent."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"
