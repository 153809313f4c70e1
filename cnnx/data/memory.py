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
    """Bytes this process can still get: the system's (Linux's MemAvailable), or less where a
    container's memory limit leaves less (the host's figure does not see that limit); None where
    neither can be read."""
    known = [found for found in (_system_available(), _cgroup_headroom()) if found is not None]
    return min(known) if known else None


def _system_available() -> int | None:
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


#: (limit, usage) files of cgroup v2, then v1.
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _cgroup_headroom() -> int | None:
    """The limit of this process's memory cgroup less what it uses; None without a limit."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            with open(limit_file) as limit, open(usage_file) as usage:
                text = limit.read().strip()
                if text == "max":
                    return None
                return max(0, int(text) - int(usage.read().strip()))
        except (OSError, ValueError):
            continue
    return None


def check_fits_in_memory(setting: str, needed: int, what: str) -> None:
    """ConfigError naming ``setting`` when preparing ``what`` needs more than is available."""
    available = available_memory()
    if available is not None and needed > available:
        raise ConfigError(f"{setting} needs about {needed / _GB:.1f} GB to prepare {what}; "
                          f"this machine has {available / _GB:.1f} GB available: choose a smaller size")
