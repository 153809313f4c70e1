"""Image files as float32 pixels in [0, 1], decoded the same way wherever cnnx reads them.

``read_image`` is the one decoder: the imagefolder plugin trains on what it returns, and
prediction must see new images exactly as training saw its own, so both call it rather than
keeping copies that could drift apart.

Every bit depth lands on the same [0, 1] scale, so a folder mixing 8-bit and 16-bit files
is one dataset:

- 8-bit modes (``L``, ``RGB``, ``P``, ``RGBA``, ``1``, …) are converted to grayscale or RGB by
  Pillow, resized as 8-bit, and divided by 255;
- 16-bit grayscale (``I;16``, ``I;16B``, …) is divided by 65535 and resized as float32, so
  none of its 65536 levels is rounded to 256 (converting it to ``L`` would clip every value
  above 255 to white);
- 32-bit integer (``I``) is taken as 16-bit data in a wider container (how Pillow and many
  tools store 16-bit PNGs and TIFFs): 0–65535, divided by 65535; values beyond are refused,
  as no scale would put them on the 8-bit images' one;
- 32-bit float (``F``) is taken as already in [0, 1]; values outside are refused.

High-bit-depth images are single-channel in Pillow; ``rgb`` repeats the channel.

A dataset that reads image files declares how as a *preparation*, plain data recorded with
the model (``cnnx_model.json``, the MLflow model's metadata, checkpoints), e.g.
``{"resize": [16, 16], "color_mode": "rgb", "resample": "bilinear"}``; ``prepare_image``
applies it, so ``cnnx predict`` (or any user of a logged model) turns an image file into
exactly the pixels the model was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from cnnx.errors import ConfigError, DataError, flat_message

#: The image files a dataset or ``cnnx predict`` reads, compared in lower case: torchvision's
#: ImageFolder list, so a folder prepared for PyTorch trains here as it is.
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
COLOR_MODES = {"grayscale": "L", "rgb": "RGB"}
RESAMPLE = ("bilinear",)
#: Pillow modes of more than 8 bits per pixel, and the divisor that maps them onto [0, 1].
_HIGH_DEPTH = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0,
               "I": 65535.0, "F": 1.0}


class LargeImageWarning(UserWarning):
    """An image file over Pillow's size guard, yet under the limit at which it refuses it."""


def read_image(path: str | PathLike[str], color_mode: str = "grayscale",
               size: tuple[int, int] | None = None, resample: str = "bilinear",
               owner: str | None = None) -> np.ndarray:
    """(C, H, W) float32 pixels in [0, 1] of the image file at ``path``.

    ``color_mode``: ``grayscale`` (C = 1) or ``rgb`` (C = 3); ``size``: ``(height, width)`` to
    resize to (bilinear, with Pillow's antialiasing when shrinking), or None to keep it.
    A file Pillow cannot read raises a DataError naming it, prefixed with ``owner`` (if any);
    one over Pillow's size guard, yet under the limit at which it refuses it, is decoded with
    a LargeImageWarning, prefixed likewise.
    """
    return _read_image(path, color_mode, size, resample, owner)


def _read_image(path: str | PathLike[str], color_mode: str, size: tuple[int, int] | None, resample: str,
                owner: str | None) -> np.ndarray:
    """``read_image``, called from the public functions only: its warning points at their caller."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    prefix = f"{owner}: " if owner else ""
    check_color_mode(color_mode, owner)
    if resample not in RESAMPLE:
        raise DataError(f"{prefix}resample={resample!r} is not known; accepted: {', '.join(RESAMPLE)}")
    box = None if size is None else (int(size[1]), int(size[0]))  # Pillow sizes are (width, height)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.mode in _HIGH_DEPTH:
                    pixels = _high_depth(image, path, prefix, box)
                else:
                    image = image.convert(COLOR_MODES[color_mode])
                    if box is not None:
                        image = image.resize(box, Image.Resampling.BILINEAR)
                    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    except Image.DecompressionBombError as exc:
        raise DataError(_too_large(path, exc, prefix)) from None
    except DataError:
        raise  # _high_depth's own refusal, already one line (DataError is a ValueError too)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{prefix}cannot read image '{path}': {flat_message(exc)}") from None
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            # Pillow's own warning names no file.
            warnings.warn(f"{prefix}image '{path}' {_pixel_count(warning.message)}; decoded anyway, which "
                          f"takes memory and time", LargeImageWarning, stacklevel=3)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if pixels.ndim == 2:
        pixels = pixels[None]
        if color_mode == "rgb":
            pixels = np.repeat(pixels, 3, axis=0)
        return pixels
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def check_color_mode(color_mode: str, owner: str | None) -> None:
    """A ConfigError naming the accepted modes, prefixed with ``owner`` (if any), for an unknown one."""
    if color_mode not in COLOR_MODES:
        prefix = f"{owner}: " if owner else ""
        raise ConfigError(f"{prefix}color_mode={color_mode!r} is not known; accepted: {', '.join(COLOR_MODES)}")


def preparation(resize: tuple[int, int] | None, color_mode: str, resample: str = "bilinear") -> dict[str, Any]:
    """The preparation a loader records on its ``DataSplits`` (JSON-ready)."""
    return {"resize": None if resize is None else [int(resize[0]), int(resize[1])],
            "color_mode": color_mode, "resample": resample}


def prepare_image(path: str | PathLike[str], prepared: Mapping[str, Any], owner: str | None = None) -> np.ndarray:
    """(C, H, W) float32 pixels of the image file at ``path`` as ``prepared`` (a recorded
    ``preparation``) says: what the dataset that declared it trained on."""
    resize = prepared.get("resize")
    return _read_image(path, prepared.get("color_mode", "grayscale"), None if resize is None else tuple(resize),
                       prepared.get("resample", "bilinear"), owner)


def _pixel_count(problem: BaseException) -> str:
    """``has N pixels, over Pillow's decompression-bomb limit of M``, from Pillow's message."""
    import re

    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(problem))
    return (f"has {int(found[1]):,} pixels, over Pillow's decompression-bomb limit of {int(found[2]):,}"
            if found else f"is too large for Pillow ({flat_message(problem)})")


def _too_large(path: str | PathLike[str], exc: Exception, prefix: str) -> str:
    """Pillow refuses images over twice ``MAX_IMAGE_PIXELS`` before decoding them (a small
    file can unpack to gigabytes); its message holds the two numbers, but not the file."""
    return f"{prefix}image '{path}' {_pixel_count(exc)}; remove it or downscale it"


def _high_depth(image, path: str | PathLike[str], prefix: str, box: tuple[int, int] | None) -> np.ndarray:
    """(H, W) float32 in [0, 1] of a 16/32-bit single-channel image, resized in float32."""
    from PIL import Image

    mode = image.mode
    raw = np.asarray(image)
    if mode == "F":
        low, high = (float(raw.min()), float(raw.max())) if raw.size else (0.0, 0.0)
        if not (np.isfinite(low) and np.isfinite(high) and 0.0 <= low and high <= 1.0):
            raise DataError(f"{prefix}image '{path}' holds 32-bit float pixels in [{low:.4g}, {high:.4g}]; "
                            f"float images are read as already scaled to [0, 1] (rescale it, or save it as "
                            f"8- or 16-bit)")
    elif mode == "I" and raw.size and (raw.min() < 0 or raw.max() > 65535):
        raise DataError(f"{prefix}image '{Path(path)}' holds 32-bit integer pixels in [{int(raw.min())}, "
                        f"{int(raw.max())}]; integer images are read as 16-bit (0–65535 → [0, 1]); "
                        f"save it as 16-bit, or as float scaled to [0, 1]")
    pixels = raw.astype(np.float32) / np.float32(_HIGH_DEPTH[mode])
    if box is not None and box != (pixels.shape[1], pixels.shape[0]):
        pixels = np.asarray(Image.fromarray(pixels).resize(box, Image.Resampling.BILINEAR), dtype=np.float32)
    return pixels
