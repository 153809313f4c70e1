"""Where cnnx keeps what it can rebuild: prepared datasets, empty MLflow store schemas.

``CNNX_CACHE_DIR`` chooses the folder (default ``$XDG_CACHE_HOME/cnnx`` or ``~/.cache/cnnx``);
``CNNX_CACHE_DIR=off`` turns caching off. Everything in it is written atomically, rebuilt
when it cannot be read, and safe to delete at any time.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CNNX_CACHE_DIR"


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return None if configured.lower() in ("off", "0", "false", "none") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnx"
