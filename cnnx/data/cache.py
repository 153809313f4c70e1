"""Prepared datasets kept on disk, so that a run does not prepare the same arrays again.

Preparing scikit-learn's digits takes milliseconds, but importing scikit-learn to do it takes
about two seconds of every run. A loader that is a pure function of its options can keep its
result here: one ``.npz`` per set of options, named by a hash of the options and of the
versions that produced it (cnnx, the library, this file's format), written atomically and
rebuilt whenever it cannot be read.

The folder is ``cnnx.cache_dir`` (``CNNX_CACHE_DIR``; ``off`` turns caching off).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnnx.cache_dir import CACHE_ENV, cache_dir, write_atomically
from cnnx.cli import warn
from cnnx.data.splits import DataSplits

#: Bump when what a cached file holds, or how a loader prepares it, changes (the key holds it,
#: so files of another format are never read). 2: the header holds skipped and preparation.
FORMAT = 2
_SPLITS = ("train", "val", "test")


def cached_splits(kind: str, options: Mapping[str, Any], build: Callable[[], DataSplits]) -> DataSplits:
    """``build()``'s result for these ``options``, from the cache when it holds it."""
    folder = cache_dir()
    if folder is None:
        return build()
    from cnnx import __version__

    key = json.dumps({"kind": kind, "options": dict(options), "cnnx": __version__, "format": FORMAT},
                     sort_keys=True, default=str)
    path = folder / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
    try:
        return _read(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass  # absent, or damaged: build it again
    data = build()
    try:
        _write(path, data)
    except OSError as exc:  # a read-only home must not stop a run
        warn(f"cannot cache the prepared dataset in '{folder}' ({exc.strerror}); "
             f"set {CACHE_ENV} to a writable folder, or to 'off'")
    return data


def _write(path: Path, data: DataSplits) -> None:
    arrays = {f"{part}_{name}": array for name in _SPLITS for part, array in zip("xy", getattr(data, name), strict=True)}
    header = {"classes": list(data.classes), "input_shape": list(data.input_shape), "name": data.name,
              "normalization": data.normalization, "skipped": list(data.skipped),
              "preparation": data.preparation}
    write_atomically(path, lambda stream: np.savez(stream, header=np.array(json.dumps(header)), **arrays))


def _read(path: Path) -> DataSplits:
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(str(archive["header"]))
        splits = {name: (archive[f"x_{name}"], archive[f"y_{name}"]) for name in _SPLITS}
    return DataSplits(**splits, classes=header["classes"], input_shape=tuple(header["input_shape"]),
                      name=header["name"], normalization=header["normalization"],
                      skipped=header["skipped"], preparation=header["preparation"])
