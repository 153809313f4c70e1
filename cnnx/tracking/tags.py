from __future__ import annotations

import platform

import numpy as np

import cnnx
from cnnx.registry import plugin_distributions


def run_tags() -> dict[str, str]:
    """What produced a run: versions of cnnx, its plugins and the numerics underneath."""
    plugins = ", ".join(f"{d} {v}" for d, v in sorted(plugin_distributions().items()))
    return {
        "cnnx.version": cnnx.__version__,
        "cnnx.plugins": plugins,
        "numpy.version": np.__version__,
        "python.version": platform.python_version(),
    }
