"""Patch extraction for convolution and pooling: im2col / col2im, layout helpers, scratch buffers.

Layout. Public arrays are NCHW, but these kernels work in *CHWN* (batch innermost). Every
strided slice over a kernel offset then moves runs of at least N contiguous values (OW·N at
stride 1) instead of runs of OW or C; at the small spatial sizes of CNN feature maps that is
what makes the copies cheap. Layers return NCHW *views* of CHWN memory (``to_nchw``);
elementwise layers in between (ReLU, dropout, …) allocate their results in the same memory
order, so the next convolution or pooling layer gets its CHWN array back for free
(``to_chwn``) and only arrays in another order are copied.

im2col/col2im loop over the kh·kw kernel offsets and copy (or add) one strided slice per
offset, as Chainer's ``chainer/utils/conv.py`` does — never ``np.add.at``, which is 7–20×
slower. Padding is never materialised: each offset copies only the output positions whose
window element lies inside the input, and the padded positions of a column buffer stay at the
zeros they were allocated with (nothing ever writes there).
"""

from __future__ import annotations

from collections.abc import Hashable
from functools import lru_cache
from typing import Any

import numpy as np

from cnnx.engine.grad_mode import is_grad_enabled
from cnnx.errors import ConfigError

Pair = tuple[int, int]


def as_pair(value: Any, name: str, minimum: int) -> Pair:
    """``3`` → ``(3, 3)``; ``(3, 5)`` stays; anything else (or below ``minimum``) is a ConfigError."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            items = list(value)
        except TypeError:
            items = []
        if len(items) != 2 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items
        ):
            raise ConfigError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = (int(items[0]), int(items[1]))
    if min(pair) < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Windows that fit along one axis (PyTorch's floor rule: a partial last window is dropped)."""
    return (size + 2 * padding - kernel) // stride + 1


class Workspace:
    """Scratch arrays a layer reuses from step to step, by role and shape.

    Allocating the multi-megabyte column buffers afresh every step costs page faults that
    show up in step times; a workspace hands back the same array while the shape and dtype
    stay the same. A few shapes are kept per role, because an epoch alternates between them
    (full training batches, the last partial one, evaluation batches) and re-filling a
    column buffer at every switch cost milliseconds each time. Only scratch lives here — never
    an array a layer returns, which the caller may keep.

    Two things besides the shape pick the array:
    - the grad mode: an inference forward under ``no_grad`` gets arrays of its own, so it never
      overwrites the columns a pending ``backward`` reads — for every layer, plugins included;
    - a ``geometry``, for arrays whose ``fill`` some positions must keep: im2col never writes the
      positions of its column buffer that fall into the padding, and which those are depends on
      the input's size, not only on the buffer's shape (7×7 and 8×8 inputs give the same 4×4
      output at stride 2).
    """

    #: Shapes kept per role and grad mode (a training epoch's full and last batches, the
    #: evaluation's apart); the least recently used one goes when another arrives.
    SHAPES_PER_ROLE = 3

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, bool], dict[tuple[Any, ...], np.ndarray]] = {}

    def get(self, role: str, shape: tuple[int, ...], dtype: Any, fill: float | None = None,
            geometry: Hashable = None) -> np.ndarray:
        """The ``role`` array of this shape and dtype (and ``geometry``) for the current grad
        mode; ``fill`` sets its value on allocation only."""
        kept = self._arrays.setdefault((role, is_grad_enabled()), {})
        key = (tuple(shape), np.dtype(dtype), geometry)
        array = kept.pop(key, None)
        if array is None:
            if len(kept) >= self.SHAPES_PER_ROLE:
                del kept[next(iter(kept))]
            array = np.empty(shape, dtype)
            if fill is not None:
                array.fill(fill)
        kept[key] = array  # most recently used last
        return array


def to_chwn(x_nchw: np.ndarray, workspace: Workspace | None = None, role: str = "chwn") -> np.ndarray:
    """A C-contiguous (C, H, W, N) array holding ``x_nchw``: a free view when the memory is already
    in that order, else a copy (into the workspace's ``role`` buffer when a workspace is given)."""
    chwn = x_nchw.transpose(1, 2, 3, 0)
    if chwn.flags.c_contiguous:
        return chwn
    if workspace is None:
        return np.ascontiguousarray(chwn)
    out = workspace.get(role, chwn.shape, chwn.dtype)
    np.copyto(out, chwn)
    return out


def to_nchw(x_chwn: np.ndarray) -> np.ndarray:
    """The public NCHW view of a CHWN array (no copy)."""
    return x_chwn.transpose(3, 0, 1, 2)


def valid_range(offset: int, stride: int, padding: int, size: int, out_size: int) -> tuple[slice, slice]:
    """For one kernel offset along one axis: the output positions whose window element falls
    inside the input, and the input positions they read (same length, the second strided).

    Output ``o`` reads input ``i = o·stride + offset − padding``, which must lie in
    ``[0, size)``: so ``o ≥ ⌈(padding − offset) / stride⌉`` and
    ``o ≤ ⌊(size − 1 + padding − offset) / stride⌋``; the outputs outside that range read the
    padding, whose zeros are never written.
    """
    first = max(0, -(-(padding - offset) // stride))  # ceil division: -(-a // b)
    last = min(out_size, (size - 1 + padding - offset) // stride + 1)
    if last <= first:
        return slice(0, 0), slice(0, 0)
    start = first * stride + offset - padding
    return slice(first, last), slice(start, start + (last - first - 1) * stride + 1, stride)


@lru_cache(maxsize=256)  # geometry repeats every step; rebuilding the slices costs ~10 µs
def _offset_slices(
    kernel: Pair, stride: Pair, padding: Pair, in_hw: Pair, out_hw: Pair
) -> tuple[tuple[int, int, tuple[slice, slice], tuple[slice, slice]], ...]:
    rows = [valid_range(i, stride[0], padding[0], in_hw[0], out_hw[0]) for i in range(kernel[0])]
    cols = [valid_range(j, stride[1], padding[1], in_hw[1], out_hw[1]) for j in range(kernel[1])]
    return tuple(
        (i, j, (out_r, out_c), (in_r, in_c))
        for i, (out_r, in_r) in enumerate(rows)
        for j, (out_c, in_c) in enumerate(cols)
        if out_r.stop > out_r.start and out_c.stop > out_c.start
    )


def im2col(
    x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair, out: np.ndarray | None = None
) -> np.ndarray:
    """Patches of a CHWN array ``x`` → column array (C, kh, kw, OH, OW, N).

    Reshaped to (C·kh·kw, OH·OW·N) the result is the right operand of the convolution GEMM,
    with the reduced axes in the weight's own (C, kh, kw) order. ``out`` must be zero wherever a
    window reaches into the padding: true of a zeroed array, and kept true by every later call
    with the same geometry because those positions are never written.
    """
    channels, height, width, batch = x.shape
    out_hw = (output_size(height, kernel[0], stride[0], padding[0]),
              output_size(width, kernel[1], stride[1], padding[1]))
    shape = (channels, kernel[0], kernel[1], *out_hw, batch)
    if out is None:
        out = np.zeros(shape, x.dtype)
    for i, j, (out_r, out_c), (in_r, in_c) in _offset_slices(kernel, stride, padding, (height, width), out_hw):
        out[:, i, j, out_r, out_c] = x[:, in_r, in_c]
    return out


def col2im(
    col: np.ndarray, in_hw: Pair, stride: Pair, padding: Pair, out: np.ndarray | None = None
) -> np.ndarray:
    """Adjoint of ``im2col``: sum a column array (C, kh, kw, OH, OW, N) back onto a CHWN image of
    spatial size ``in_hw``; contributions that fell into the padding are dropped."""
    channels, kh, kw, out_h, out_w, batch = col.shape
    if out is None:
        out = np.zeros((channels, *in_hw, batch), col.dtype)
    else:
        out.fill(0)
    for i, j, (out_r, out_c), (in_r, in_c) in _offset_slices((kh, kw), stride, padding, in_hw, (out_h, out_w)):
        out[:, in_r, in_c] += col[:, i, j, out_r, out_c]
    return out
