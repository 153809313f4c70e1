"""Why ``np.load(path, allow_pickle=False)`` failed, in one line that fits the file.

NumPy tries pickle on anything that is neither a zip nor a .npy and then blames pickling,
which misleads about a text file or an image that was given an .npz name.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from cnnx.errors import flat_message

#: What reading an .npz raises for a file that is not one, or a damaged one: zipfile's errors
#: come when it is opened and again, lazily, when a truncated or corrupt member is read.
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def load_failure(path: str | Path, error: BaseException) -> str:
    reason = flat_message(error)
    return pickle_refusal(Path(path)) if "pickle" in reason else reason


def pickle_refusal(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError:
        head = b""
    if head.startswith((b"PK", b"\x93NUMPY")):
        return "holds Python objects, which would need pickle to load (refused)"
    if head.startswith(b"\x80"):
        return "a Python pickle, which could run code when loaded (refused)"
    return "neither an .npz (zip) archive nor an .npy array"
