from __future__ import annotations

import math

import numpy as np


def tile_grid(tiles: np.ndarray, cell: int = 8, gap: int = 1, max_side: int | None = None) -> np.ndarray:
    """Lay out ``(rows, cols, h, w)`` values in [0, 1] as one uint8 image with white gaps.

    Tiles are enlarged by nearest neighbour until their longer side reaches ``cell`` pixels,
    so 3×3 kernels or 4×4 feature maps stay visible in the MLflow UI (which smooths what it
    enlarges itself), but less where the grid's longer side would exceed ``max_side``.
    """
    n_rows, n_cols, h, w = tiles.shape
    zoom = math.ceil(cell / max(h, w))
    if max_side is not None:  # the largest zoom with n·(size·zoom + gap) + gap <= max_side
        for n, size in ((n_rows, h), (n_cols, w)):
            zoom = min(zoom, ((max_side - gap) // max(n, 1) - gap) // size)
    zoom = max(1, zoom)
    tiles = tiles.repeat(zoom, axis=2).repeat(zoom, axis=3) * 255.0
    th, tw = h * zoom, w * zoom
    grid = np.full((n_rows * (th + gap) + gap, n_cols * (tw + gap) + gap), 255.0, np.float32)
    rows = (np.arange(n_rows) * (th + gap) + gap)[:, None, None, None] + np.arange(th)[None, None, :, None]
    cols = (np.arange(n_cols) * (tw + gap) + gap)[None, :, None, None] + np.arange(tw)[None, None, None, :]
    grid[rows, cols] = tiles
    return grid.round().astype(np.uint8)


#: Kernels per row when a layer has one input channel (a first conv layer on grey images).
KERNELS_PER_ROW = 8


def kernel_grid(weight: np.ndarray, cell: int = 32, gap: int = 1, max_side: int = 1024) -> np.ndarray:
    """Render conv kernels ``(out, in, kh, kw)`` as one uint8 image, a row per output channel
    (the first 16 input channels), or, for one input channel, ``KERNELS_PER_ROW`` kernels a row
    (torchvision's ``make_grid``); each kernel at least ``cell`` pixels wide unless the image
    would exceed ``max_side``.

    One scale for the layer, symmetric around zero (mid-grey = 0): the sign of a weight reads
    the same in every cell, and a kernel that has faded to small weights looks faded rather
    than as contrasty as the strongest one (per-kernel scaling hid that).
    """
    w = weight[:, :16].astype(np.float32)
    scale = float(np.abs(w).max()) or 1.0
    tiles = 0.5 + 0.5 * w / scale
    out, channels, kh, kw = tiles.shape
    if channels == 1 and out > 1:
        per_row = min(KERNELS_PER_ROW, out)
        rows = -(-out // per_row)
        wrapped = np.full((rows * per_row, kh, kw), 0.5, np.float32)  # empty cells read as zero
        wrapped[:out] = tiles[:, 0]
        tiles = wrapped.reshape(rows, per_row, kh, kw)
    return tile_grid(tiles, cell, gap, max_side)


def activation_grid(maps: np.ndarray, cell: int = 32, gap: int = 2) -> np.ndarray:
    """Render activations ``(images, channels, h, w)`` a row per image, each map min-max scaled.

    Per-map scaling shows where each channel responds; absolute magnitudes differ by orders
    between layers and would leave most maps black under one common scale.
    """
    maps = maps.astype(np.float32)
    low = maps.min(axis=(2, 3), keepdims=True)
    span = maps.max(axis=(2, 3), keepdims=True) - low
    span[span == 0] = 1.0
    return tile_grid((maps - low) / span, cell, gap)
