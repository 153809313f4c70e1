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


#: (folder, limit, usage, stat file, its reclaimable page-cache line, the /proc/self/cgroup
#: controller field) of cgroup v2, then v1.
_CGROUP_FILES = (("/sys/fs/cgroup", "memory.max", "memory.current", "memory.stat", "inactive_file", ""),
                 ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat",
                  "total_inactive_file", "memory"))


def _cgroup_headroom() -> int | None:
    """The least room any memory cgroup this process is in leaves (its own and those above
    it: a container's limit may sit on a parent): each one's limit less its working set (its
    usage but the page cache the kernel reclaims before killing, as docker and the kubelet
    count it); None without a limit."""
    for root, limit_name, usage_name, stat_name, reclaimable, controller in _CGROUP_FILES:
        if not os.path.isdir(root):
            continue
        own = _own_cgroup(controller).strip("/")
        parts = own.split("/") if own else []
        rooms, read = [], False
        for depth in range(len(parts), -1, -1):  # this cgroup first, then each parent, then the root
            folder = os.path.join(root, *parts[:depth])
            try:
                with open(os.path.join(folder, limit_name)) as limit, open(os.path.join(folder, usage_name)) as usage:
                    text, used = limit.read().strip(), int(usage.read().strip())
            except (OSError, ValueError):
                continue
            read = True
            if text != "max" and int(text) < 1 << 60:  # v1 writes "no limit" as a huge number
                rooms.append(max(0, int(text) - used + _stat(os.path.join(folder, stat_name), reclaimable)))
        if read:  # this version's files, read: the other's are not this process's
            return min(rooms) if rooms else None
    return None


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path for ``controller`` in /proc/self/cgroup (``0::/…`` for v2,
    ``N:memory:/…`` for v1), or ""."""
    try:
        with open("/proc/self/cgroup") as handle:
            for line in handle:
                _, names, path = line.rstrip("\n").split(":", 2)
                if (controller == "" and names == "") or controller in names.split(","):
                    return path
    except (OSError, ValueError):
        pass
    return ""


def _stat(path: str, key: str) -> int:
    try:
        with open(path) as handle:
            for line in handle:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def check_fits_in_memory(setting: str, needed: int, what: str) -> None:
    """ConfigError naming ``setting`` when preparing ``what`` needs more than is available."""
    available = available_memory()
    if available is not None and needed > available:
        raise ConfigError(f"{setting} needs about {needed / _GB:.1f} GB to prepare {what}; "
                          f"{available / _GB:.1f} GB are available to this process: choose a smaller size")
