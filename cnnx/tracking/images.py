from __future__ import annotations

import numpy as np


def kernel_grid(weight: np.ndarray, cell: int = 8, gap: int = 1) -> np.ndarray:
    """Render conv kernels ``(out, in, kh, kw)`` as one uint8 image, a row per output channel.

    Each kernel is scaled symmetrically around zero (mid-grey = 0), so the sign of a weight
    reads the same in every cell and every epoch's image; cells are enlarged by nearest
    neighbour so 3×3 or 5×5 kernels are visible in the MLflow UI.
    """
    out_c, in_c, kh, kw = weight.shape
    in_shown = min(in_c, 16)
    w = weight[:, :in_shown].astype(np.float32)
    scale = np.abs(w).max(axis=(2, 3), keepdims=True)
    scale[scale == 0] = 1.0
    tiles = (0.5 + 0.5 * w / scale) * 255.0
    zoom = max(1, cell // max(kh, kw))
    tiles = tiles.repeat(zoom, axis=2).repeat(zoom, axis=3)
    th, tw = kh * zoom, kw * zoom
    grid = np.full((out_c * (th + gap) + gap, in_shown * (tw + gap) + gap), 255.0, np.float32)
    rows = (np.arange(out_c) * (th + gap) + gap)[:, None, None, None] + np.arange(th)[None, None, :, None]
    cols = (np.arange(in_shown) * (tw + gap) + gap)[None, :, None, None] + np.arange(tw)[None, None, None, :]
    grid[rows, cols] = tiles
    return grid.round().astype(np.uint8)
