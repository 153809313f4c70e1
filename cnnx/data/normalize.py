"""Input normalisation fitted on the training split only.

Statistics from val/test would leak the held-out data into training; the fitted
``shift``/``scale`` are returned so the same transform can be recorded and re-applied to new
images at inference time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnx.errors import ConfigError

MODES = ("none", "unit", "standard")


def check_mode(mode: str, owner: str = "dataset") -> str:
    if mode not in MODES:
        raise ConfigError(
            f"{owner}: normalize={mode!r} is not a known mode; accepted: {', '.join(MODES)}"
        )
    return mode


def fit_normalization(x_train: np.ndarray, mode: str, owner: str = "dataset") -> dict[str, Any]:
    """Per-channel ``{"mode", "shift", "scale"}`` with ``normalised = (x - shift) / scale``.

    - ``none``: identity.
    - ``unit``: min-max over all training pixels to [0, 1] (one range for every channel, so
      colour balance is kept).
    - ``standard``: per-channel mean 0, standard deviation 1.

    Constant inputs get scale 1 rather than a division by zero. ``input_range`` is the raw
    training pixels' [min, max] (see ``DataSplits``).
    """
    check_mode(mode, owner)
    channels = x_train.shape[1]
    shift = np.zeros(channels)
    scale = np.ones(channels)
    low, high = float(x_train.min()), float(x_train.max())
    if mode == "unit":
        shift[:] = low
        scale[:] = high - low if high > low else 1.0
    elif mode == "standard":
        # float64 accumulation: float32 sums over millions of pixels lose digits.
        shift = x_train.mean(axis=(0, 2, 3), dtype=np.float64)
        std = x_train.std(axis=(0, 2, 3), dtype=np.float64)
        scale = np.where(std > 0, std, 1.0)
    return {"mode": mode, "shift": [float(v) for v in shift], "scale": [float(v) for v in scale],
            "input_range": [low, high]}


def apply_normalization(x: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    """Normalise float32 ``x`` (N, C, H, W) in place and return it."""
    if normalization["mode"] == "none":
        return x
    shift = np.asarray(normalization["shift"], dtype=np.float32)[:, None, None]
    scale = np.asarray(normalization["scale"], dtype=np.float32)[:, None, None]
    x -= shift
    x /= scale
    return x


def invert_normalization(x: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    """Back to the loader's pixel scale (a new array): what a user feeds a logged model."""
    if normalization["mode"] == "none":
        return np.array(x, dtype=np.float32)
    shift = np.asarray(normalization["shift"], dtype=np.float32)[:, None, None]
    scale = np.asarray(normalization["scale"], dtype=np.float32)[:, None, None]
    return x * scale + shift


def raw_range(x: np.ndarray, normalization: dict[str, Any]) -> list[float]:
    """[min, max] of normalised images ``x`` (N, C, H, W) back in the loader's pixel scale."""
    per_channel = np.stack([x.min(axis=(0, 2, 3)), x.max(axis=(0, 2, 3))])[:, :, None, None]
    lows, highs = invert_normalization(per_channel, normalization)  # scale > 0: order is kept
    low, high = float(lows.min()), float(highs.max())
    # Undoing float32 normalisation leaves noise (a raw 0 comes back as -1.4e-08): round it
    # off at a millionth of the range.
    decimals = 6 - math.floor(math.log10(high - low)) if high > low else 6
    return [round(low, decimals) + 0.0, round(high, decimals) + 0.0]  # + 0.0: no -0.0


def other_scale(trained: tuple[float, float], seen: tuple[float, float]) -> str | None:
    """``"larger"`` or ``"smaller"`` when pixels spanning ``seen`` ([min, max]) look like
    another scale than pixels spanning ``trained``, else None.

    Pixels beyond the trained range by more than its own width (0–16 or 0–255 against [0, 1])
    mean a scale was missed; augmentation or noise stay well within that. So do images whose
    whole span fits in a sliver (1/50) of the trained width at its low end ([0, 1] against
    0–255): a dark or faint image still spans more, and a blank one (no span at all) says
    nothing of its scale.
    """
    low, high = trained
    seen_low, seen_high = seen
    margin = high - low if high > low else max(abs(low), 1.0)
    if not (low - margin <= seen_low and seen_high <= high + margin):
        return "larger"
    sliver = (high - low) / 50
    if high > low and 0 < seen_high - seen_low < sliver and seen_high < low + sliver:
        return "smaller"
    return None


def normalize_splits(splits: Any, mode: str, owner: str = "dataset") -> dict[str, Any]:
    """Fit on the first (training) split's images, normalise every split in place, and return
    the fitted transform. ``splits`` are ``(x, y)`` pairs: train, then the held-out ones."""
    normalization = fit_normalization(splits[0][0], mode, owner)
    for x, _ in splits:
        apply_normalization(x, normalization)
    return normalization
