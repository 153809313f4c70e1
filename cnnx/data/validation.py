"""The checks every dataset loader runs before splitting: bad data fails here, in one line
that names the dataset, instead of as a NaN loss or an index error epochs later."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.errors import DataError


def check_dataset(
    x: Any, y: Any, source: str, min_classes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Validate images ``x`` (N, C, H, W) and labels ``y`` (N,); return them as float32 and
    int64 (no copy when they already are).

    ``source`` names the dataset or file in messages. Labels must be integers >= 0 (floats
    are accepted when every value is whole: files written by other tools often store
    ``1.0``); at least ``min_classes`` distinct classes are required (a held-out split
    given by the user may legitimately hold one).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{source}: x has dtype {x.dtype}; expected numbers (float or int pixels)")
    if x.ndim != 4:
        raise DataError(f"{source}: x has shape {x.shape}; expected 4 dimensions (N, C, H, W)")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # column vectors from other tools
    if y.ndim != 1:
        raise DataError(
            f"{source}: y has shape {y.shape}; expected one integer label per sample, shape (N,)"
        )
    if len(x) == 0:
        raise DataError(f"{source}: x is empty (0 samples)")
    if len(x) != len(y):
        raise DataError(f"{source}: x has {len(x)} samples but y has {len(y)} labels")
    if 0 in x.shape[1:]:
        raise DataError(f"{source}: x has shape {x.shape}; every image dimension must be >= 1")

    with np.errstate(over="ignore"):  # overflow becomes inf, reported just below
        x = np.ascontiguousarray(x, dtype=np.float32)
    # min/max propagate NaN and expose +-inf without a full-size boolean temporary.
    if not (np.isfinite(x.min()) and np.isfinite(x.max())):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise DataError(
            f"{source}: x contains {bad} NaN or infinite values (or values beyond float32 range)"
        )

    y = class_indices(y, source)
    present = np.unique(y)
    if len(present) < min_classes:
        raise DataError(
            f"{source}: y contains a single class ({int(present[0])}); "
            f"a classifier needs at least two"
        )
    return x, y


def class_indices(y: np.ndarray, source: str) -> np.ndarray:
    """Labels ``y`` (N,) as int64 class indices: integers >= 0, or floats that are all whole
    (files written by other tools often store ``1.0``); else a DataError naming ``source``."""
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            example = y[~np.isfinite(y) | (y != np.round(y))][0].item()
            raise DataError(
                f"{source}: y contains non-integer labels such as {example!r}; "
                f"expected integer class indices 0..K-1"
            )
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise DataError(f"{source}: y has dtype {y.dtype}; expected integer class indices 0..K-1")
    y = y.astype(np.int64, copy=False)
    if len(y) and y.min() < 0:
        raise DataError(
            f"{source}: y contains negative label {int(y.min())}; expected class indices 0..K-1"
        )
    return y
