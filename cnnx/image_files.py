"""Image files decoded as the ``imagefolder`` dataset (cnnx-imagefolder) decodes them for
training, so that ``cnnx predict`` feeds a model the pixels it learned from.

Pillow opens the file, converts it to the model's colour mode (``L`` or ``RGB``: an alpha
channel is dropped, a palette expanded, colour turned to luma as Pillow does), and the result
is 8-bit, later scaled to [0, 1] by 255. Pillow's own ``convert`` clips 16-bit greyscale
(``I;16``) at 255 instead of rescaling it, which would turn every pixel above 1/256 white:
such images are first brought to the 8-bit scale (÷257), as an 8-bit save would.
"""

from __future__ import annotations

import re
import warnings
from os import PathLike
from pathlib import Path

import numpy as np

from cnnx.errors import DataError

#: What the ``imagefolder`` dataset trains on, compared in lower case.
EXTENSIONS = (".png", ".jpg", ".jpeg")
#: The colour mode a model with this many channels was trained in.
MODES = {1: "L", 3: "RGB"}
_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class LargeImageWarning(UserWarning):
    """An image file over Pillow's size guard, yet under the limit at which it refuses it."""


def _bomb_size(problem: object) -> str:
    """``N pixels, over the limit of M`` from Pillow's decompression-bomb message."""
    numbers = re.findall(r"\((\d+) pixels\).*?limit of (\d+)", str(problem))
    if not numbers:
        return " ".join(str(problem).split())
    pixels, limit = (int(n) for n in numbers[0])
    return f"{pixels:,} pixels, over the limit of {limit:,}"


def decode_image(path: str | PathLike[str], mode: str | None = None) -> np.ndarray:
    """(C, H, W) uint8 pixels of one image file, in ``mode`` (``L``, ``RGB``; None: grey
    images stay grey, any other becomes RGB); a DataError naming the file if unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
    except Image.DecompressionBombError as exc:
        # Pillow's guard against files that expand to gigabytes; its message names no file.
        raise DataError(f"image '{path}': {_bomb_size(exc)}; Pillow refuses images this large "
                        f"(a decompression-bomb guard): shrink it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"image '{path}': not a readable image ({reason})") from None
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            warnings.warn(f"image '{path}': {_bomb_size(warning.message)}; decoded anyway, which takes "
                          f"memory and time", LargeImageWarning, stacklevel=2)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if image.mode in _WIDE_GREY:
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    if mode is None:
        mode = "L" if image.mode in ("1", "L", "LA", "La") else "RGB"
    pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
