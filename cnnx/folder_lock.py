"""An exclusive lock on a folder itself (``flock`` on its descriptor), where the OS has one.

On the folder rather than on a file in it: a lock file would be one more file for users to
wonder about, and a lock on a data file stays with the file that a rewrite replaces. The OS
drops the lock when its holder exits, however it exits (``kill -9`` included), so a lock is
never left stale. Where locks are unavailable (no ``fcntl``, or a filesystem answering
ENOLCK) the work goes on unlocked: doing it unguarded beats not doing it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class FolderBusy(Exception):
    """Another open descriptor (another process, usually) holds the folder's lock."""


def lock_folder(directory: Path, wait: bool = True) -> int | None:
    """Lock ``directory``; the descriptor holding the lock (``os.close`` releases it), or None
    where locks are unavailable. With ``wait=False`` a lock held elsewhere raises FolderBusy."""
    try:
        import fcntl
    except ImportError:
        return None
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(descriptor)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise FolderBusy(str(directory)) from None
        return None  # ENOLCK and the like: no locks on this filesystem
    return descriptor
