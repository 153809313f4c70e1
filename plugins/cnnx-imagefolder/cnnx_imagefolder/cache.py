"""Decoded images kept as arrays, so that only the first run pays for reading the files.

The key hashes everything the arrays depend on — the folder, the decoding options and every
image's relative path, size and modification time — so adding, removing or editing an image
(or changing ``size``/``color_mode``) reads the folder again. Entries are written to a
temporary file and renamed into place: an interrupted run never leaves a half-written
entry, and an unreadable entry is simply rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnx.cache_dir import cache_dir, write_atomically
from cnnx.cli import warn

#: 2: float32 pixels in [0, 1] (16-bit images keep their precision); 1 held uint8.
FORMAT = 2


def default_cache_dir() -> Path | None:
    """A folder of cnnx's cache (``CNNX_CACHE_DIR``), or None when the user turned caching off."""
    folder = cache_dir()
    return None if folder is None else folder / "imagefolder"


def cache_key(root: Path, files: list[Path], options: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": FORMAT, "root": str(root), **options}, sort_keys=True).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"\0{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def load(cache_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    path = cache_dir / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["x"], archive["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def save(cache_dir: Path, key: str, x: np.ndarray, y: np.ndarray) -> None:
    """Best effort: a cache that cannot be written only costs the next run some time."""
    try:
        write_atomically(cache_dir / f"{key}.npz", lambda stream: np.savez(stream, x=x, y=y))
    except OSError as exc:
        warn(f"cannot cache the decoded images in '{cache_dir}' ({exc.strerror or exc}); "
             f"set dataset.cache_dir to a writable folder")
