"""One checkpoint file: arrays plus a JSON header in an uncompressed ``.npz``, written atomically.

Only numeric arrays and JSON are stored, and files are read with ``allow_pickle=False``: a
checkpoint cannot run code when loaded. Writing goes to a temporary file in the same
directory, is fsynced, then renamed over the final name, so a crash (even SIGKILL) leaves
either the previous file or the complete new one, never a half-written checkpoint under
the real name. Compression is off: it costs more time than the few hundred kB it saves.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnnx.errors import CheckpointError, flat_message
from cnnx.npz_load_failure import NPZ_READ_ERRORS, load_failure

FORMAT = "cnnx-checkpoint"
VERSION = 1
HEADER_KEY = "__cnnx_header__"
#: Header entry with the model's ``Classifier.description()`` (classes, normalisation…), so
#: ``cnnx predict`` never rebuilds them from a dataset that may have changed since; older
#: checkpoints lack it.
CLASSIFIER = "classifier"
TEMP_SUFFIX = ".tmp"
READ_ERRORS = (*NPZ_READ_ERRORS, json.JSONDecodeError, UnicodeDecodeError)


def write_checkpoint(path: Path, arrays: Mapping[str, np.ndarray], header: Mapping[str, Any]) -> Path:
    """Atomically write ``arrays`` and the JSON-serialisable ``header`` to ``path``."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **header}
    try:
        text = json.dumps(payload, allow_nan=True)
    except (TypeError, ValueError) as exc:  # a plugin's state holding NumPy scalars, say
        raise CheckpointError(f"checkpoint '{path}' cannot be written: its header is not JSON "
                              f"({flat_message(exc)})") from None
    encoded = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    temp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    # Built in memory and written in one call: zipfile's many small writes to a real file
    # cost several times more.
    buffer = io.BytesIO()
    np.savez(buffer, **{HEADER_KEY: encoded}, **arrays)
    try:
        with open(temp, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform allows opening a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, header)`` of a checkpoint; CheckpointError naming the file if it is unusable."""
    path = Path(path)
    where = f"checkpoint file '{path.resolve()}'"
    if not path.is_file():
        raise CheckpointError(f"{where}: {'is a directory' if path.is_dir() else 'not found'}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise CheckpointError(f"{where}: not a cnnx checkpoint (a single .npy array)")
            if HEADER_KEY not in archive.files:
                raise CheckpointError(
                    f"{where}: not a cnnx checkpoint (no header; found arrays "
                    f"{', '.join(sorted(archive.files)[:5]) or 'none'})"
                )
            header = json.loads(bytes(archive[HEADER_KEY]).decode("utf-8"))
            arrays = {key: archive[key] for key in archive.files if key != HEADER_KEY}
    except CheckpointError:
        raise
    except READ_ERRORS as exc:
        # zipfile/numpy report truncation in many shapes; the user needs the file name.
        reason = load_failure(path, exc)
        raise CheckpointError(f"{where}: unreadable, truncated or not a checkpoint ({reason})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a cnnx checkpoint (header format {header.get('format')!r})"
                              if isinstance(header, dict) else f"{where}: not a cnnx checkpoint")
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format version {header.get('version')!r}; this cnnx reads version {VERSION}"
        )
    return arrays, header
