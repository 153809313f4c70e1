"""Bilinear image resizing as two small matrix products.

Bilinear interpolation is separable, so resizing a batch is ``R_h @ x @ R_w.T`` with
(out, in) interpolation matrices: one BLAS-backed batched matmul for the whole dataset, no
per-image loop. Pixel centres follow the half-pixel convention of
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing),
so images match what a PyTorch pipeline produces.
"""

from __future__ import annotations

import numpy as np


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix whose rows hold the two interpolation weights."""
    scale = in_size / out_size
    src = (np.arange(out_size) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, None)  # as PyTorch: edge pixels are not extrapolated
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lo), 1.0 - frac)  # add.at: lo == hi at the last pixel
    np.add.at(matrix, (rows, hi), frac)
    return matrix


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (N, C, H, W) images to (N, C, height, width) float32."""
    _, _, h, w = images.shape
    if (h, w) == (height, width):
        return np.asarray(images, dtype=np.float32)
    rows = bilinear_matrix(h, height)
    cols = bilinear_matrix(w, width)
    out = rows @ images.astype(np.float64, copy=False) @ cols.T
    return out.astype(np.float32)
