"""Where cnnx keeps what it can rebuild: prepared datasets, empty MLflow store schemas.

``CNNX_CACHE_DIR`` chooses the folder (default ``$XDG_CACHE_HOME/cnnx`` or ``~/.cache/cnnx``);
``CNNX_CACHE_DIR=off`` turns caching off. Everything in it is written atomically, rebuilt
when it cannot be read, and safe to delete at any time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CACHE_ENV = "CNNX_CACHE_DIR"


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return None if configured.lower() in ("off", "0", "false", "none") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnx"


def _umask() -> int:
    """The process's umask, read without setting it where Linux shows it (setting it, the only
    portable way to read it, would change it for every thread for a moment)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _umask_by_setting()


@functools.cache
def _umask_by_setting() -> int:
    """Elsewhere (macOS), read once: setting it to read it changes it for every thread briefly."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace ``path`` with what ``write`` puts in a file: readers see the old file or
    the whole new one, never a part. Raises OSError when the folder cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name: processes in containers that share a cache folder may share pids.
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as stream:
            # mkstemp makes files 0600: a table or a sweep link meant for a team gets the mode
            # any new file would. Best effort: some mounts refuse chmod, and the file still serves.
            with contextlib.suppress(OSError):
                os.fchmod(stream.fileno(), 0o666 & ~_umask())
            write(stream)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
