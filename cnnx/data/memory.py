"""Whether prepared arrays fit in memory, asked before they are made.

An image size a thousand times the native one is a valid option and a few characters to type;
the arrays it asks for can exceed the machine's memory, and then the kernel's OOM killer ends
the process (or another one) without a word. The size is known before the arrays exist.
"""

from __future__ import annotations

import os

from cnnx.errors import ConfigError

_GB = 1e9


def available_memory() -> int | None:
    """Bytes the system can still give (Linux's MemAvailable); None where it cannot tell."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(setting: str, needed: int, what: str) -> None:
    """ConfigError naming ``setting`` when preparing ``what`` needs more than is available."""
    available = available_memory()
    if available is not None and needed > available:
        raise ConfigError(f"{setting} needs about {needed / _GB:.1f} GB to prepare {what}; "
                          f"this machine has {available / _GB:.1f} GB available: choose a smaller size")
