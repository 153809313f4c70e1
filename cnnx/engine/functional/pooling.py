"""Max and average pooling forward/backward over strided slices, one per window offset.

Like convolution, these work in CHWN memory and return NCHW views of it (see ``im2col``).
A (kh, kw, C, OH, OW, N) *window view* of the input — element [i, j] is the strided slice
holding offset (i, j) of every window — gives each offset as one slice without copying.

Max pooling routes each window's gradient to a single element, the first maximum in row-major
window order, as PyTorch does. Rather than tracking a running argmax offset by offset, the
forward pass takes the maxima and then finds the winners with a few whole-slab operations:
compare every offset with the window maximum, OR-accumulate over the offsets, and keep the
offset where the accumulated flag first turns on. Only the boolean winner mask is kept, so a
later layer that modifies its input in place cannot corrupt the gradient.

The 2×2, stride-2, unpadded max pooling of most CNNs has a path of its own (``_Pairwise2x2``):
two pairwise stages over contiguous runs — the two columns of each window, then the two rows —
instead of strided slabs per window offset, with two small masks for the gradient's route.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnnx.engine.functional.im2col import Pair, Workspace, output_size, to_chwn, to_nchw, valid_range


def window_view(x_chwn: np.ndarray, kernel: Pair, stride: Pair, out_hw: Pair, writeable: bool = False) -> np.ndarray:
    """(kh, kw, C, OH, OW, N) view of a CHWN array; [i, j] is offset (i, j) of every window.

    Write through it only when windows do not overlap (stride >= kernel), or elements alias.
    """
    c_stride, h_stride, w_stride, n_stride = x_chwn.strides
    shape = (*kernel, x_chwn.shape[0], *out_hw, x_chwn.shape[3])
    strides = (h_stride, w_stride, c_stride, h_stride * stride[0], w_stride * stride[1], n_stride)
    if not x_chwn.flags.c_contiguous:
        return as_strided(x_chwn, shape=shape, strides=strides, writeable=writeable)
    # The ndarray constructor builds the same view as as_strided ~40× faster; at 8×8 inputs
    # the tens of µs per call are a visible share of a training step.
    view = np.ndarray(shape, x_chwn.dtype, x_chwn, 0, strides)
    view.flags.writeable = writeable
    return view


def _out_hw(in_hw: Pair, kernel: Pair, stride: Pair, padding: Pair) -> Pair:
    return (output_size(in_hw[0], kernel[0], stride[0], padding[0]),
            output_size(in_hw[1], kernel[1], stride[1], padding[1]))


def _overlapping(kernel: Pair, stride: Pair) -> bool:
    return stride[0] < kernel[0] or stride[1] < kernel[1]


# -- max pooling ---------------------------------------------------------------------------
def max_pool2d_forward(
    x: np.ndarray,
    kernel: Pair,
    stride: Pair,
    padding: Pair,
    workspace: Workspace | None = None,
    keep_winners: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (N, C, H, W) → (output, winner mask for ``max_pool2d_backward`` or None).

    The mask (kh, kw, C, OH, OW, N) marks each window's first maximum; with a workspace it is a
    workspace buffer, valid until the next forward call. Padding is -inf, so it never wins.
    """
    workspace = workspace if workspace is not None else Workspace()
    x_chwn = to_chwn(x, workspace, "input")
    if kernel == stride == (2, 2) and padding == (0, 0):
        y, route = _Pairwise2x2.forward(x_chwn, keep_winners)
        return to_nchw(y), route
    channels, height, width, batch = x_chwn.shape
    if padding != (0, 0):
        padded_shape = (channels, height + 2 * padding[0], width + 2 * padding[1], batch)
        padded = workspace.get("padded", padded_shape, x.dtype, fill=-np.inf, geometry=padding)
        padded[:, padding[0]:padding[0] + height, padding[1]:padding[1] + width] = x_chwn
        x_chwn = padded
    out_hw = _out_hw((height, width), kernel, stride, padding)
    windows = window_view(x_chwn, kernel, stride, out_hw)
    offsets = [windows[i, j] for i in range(kernel[0]) for j in range(kernel[1])]
    y = np.maximum(offsets[0], offsets[1]) if len(offsets) > 1 else offsets[0].copy()
    for window in offsets[2:]:
        np.maximum(y, window, out=y)
    if not keep_winners:
        return to_nchw(y), None
    # seen[k]: some offset <= k (row-major) holds the window maximum. (A loop, because
    # np.logical_or.accumulate along axis 0 runs ~100x slower than these slab-wise ORs.)
    seen = workspace.get("seen", windows.shape, np.bool_)
    np.equal(windows, y, out=seen)
    seen_flat = seen.reshape(len(offsets), *y.shape)
    for k in range(1, len(offsets)):
        np.logical_or(seen_flat[k], seen_flat[k - 1], out=seen_flat[k])
    winners = workspace.get("winners", windows.shape, np.bool_)
    winners_flat = winners.reshape(seen_flat.shape)
    winners_flat[0] = seen_flat[0]
    np.not_equal(seen_flat[1:], seen_flat[:-1], out=winners_flat[1:])
    return to_nchw(y), winners


def max_pool2d_backward(
    grad_y: np.ndarray,
    winners: np.ndarray,
    input_hw: Pair,
    kernel: Pair,
    stride: Pair,
    padding: Pair,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Input gradient: each window's output gradient goes to its first maximum."""
    g = to_chwn(grad_y, workspace, "grad_output")
    if isinstance(winners, _Pairwise2x2):
        return to_nchw(winners.backward(g, input_hw))
    channels, out_h, out_w, batch = g.shape
    padded_hw = (input_hw[0] + 2 * padding[0], input_hw[1] + 2 * padding[1])
    grad_padded = np.zeros((channels, *padded_hw, batch), g.dtype)
    grad_windows = window_view(grad_padded, kernel, stride, (out_h, out_w), writeable=True)
    if _overlapping(kernel, stride):
        routed = np.empty_like(g)
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                np.multiply(g, winners[i, j], out=routed)
                grad_windows[i, j] += routed
    else:
        np.multiply(g, winners, out=grad_windows)
    grad_x = grad_padded[:, padding[0]:padding[0] + input_hw[0], padding[1]:padding[1] + input_hw[1]]
    return to_nchw(grad_x)


class _Pairwise2x2:
    """Route of a 2×2, stride-2 max pooling: which column won in each row, which row won.

    In CHWN memory the two columns of a window are two adjacent runs of N values and its two
    rows are runs of W·N values, so every stage works on long contiguous runs. Strictly
    greater wins, so ties go to the first column, then the first row: the first maximum in
    row-major order, as PyTorch routes it.
    """

    __slots__ = ("right_won", "lower_won")

    def __init__(self, right_won: np.ndarray, lower_won: np.ndarray) -> None:
        self.right_won = right_won  # (C, OH, 2, OW, N): column 1 beat column 0 in that row
        self.lower_won = lower_won  # (C, OH, OW, N): row 1's maximum beat row 0's

    @staticmethod
    def _pairs(x_chwn: np.ndarray) -> np.ndarray:
        """(C, OH, 2, OW, 2, N) view of the windows' rows and columns (a leftover odd row or
        column, outside every window, is left out)."""
        channels, height, width, batch = x_chwn.shape
        out_h, out_w = height // 2, width // 2
        return x_chwn[:, :2 * out_h, :2 * out_w].reshape(channels, out_h, 2, out_w, 2, batch)

    @classmethod
    def forward(cls, x_chwn: np.ndarray, keep_winners: bool) -> tuple[np.ndarray, _Pairwise2x2 | None]:
        pairs = cls._pairs(x_chwn)
        left, right = pairs[..., 0, :], pairs[..., 1, :]
        row_max = np.maximum(left, right)  # (C, OH, 2, OW, N), contiguous
        y = np.maximum(row_max[:, :, 0], row_max[:, :, 1])
        if not keep_winners:
            return y, None
        return y, cls(np.greater(right, left), np.greater(row_max[:, :, 1], row_max[:, :, 0]))

    def backward(self, g_chwn: np.ndarray, input_hw: Pair) -> np.ndarray:
        channels, out_h, out_w, batch = g_chwn.shape
        grad_x = np.empty((channels, *input_hw, batch), g_chwn.dtype)
        if input_hw[0] % 2 or input_hw[1] % 2:
            grad_x[:, 2 * out_h:] = 0  # the leftover row and column get nothing
            grad_x[:, :, 2 * out_w:] = 0
        pairs = self._pairs(grad_x)
        # rows: the winning row's share is g, the other's 0 (g·won and g − g·won)
        per_row = np.empty((channels, out_h, 2, out_w, batch), g_chwn.dtype)
        np.multiply(g_chwn, self.lower_won, out=per_row[:, :, 1])
        np.subtract(g_chwn, per_row[:, :, 1], out=per_row[:, :, 0])
        # then columns, within each row
        np.multiply(per_row, self.right_won, out=pairs[..., 1, :])
        np.subtract(per_row, pairs[..., 1, :], out=pairs[..., 0, :])
        return grad_x


# -- average pooling -----------------------------------------------------------------------
def avg_pool2d_forward(
    x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair, workspace: Workspace | None = None
) -> np.ndarray:
    """``x`` (N, C, H, W) → window means; padded zeros count in the divisor (PyTorch's
    ``count_include_pad=True``), so every window divides by kh·kw."""
    x_chwn = to_chwn(x, workspace, "input")
    channels, height, width, batch = x_chwn.shape
    out_hw = _out_hw((height, width), kernel, stride, padding)
    y = np.zeros((channels, *out_hw, batch), x.dtype)
    for i in range(kernel[0]):
        out_r, in_r = valid_range(i, stride[0], padding[0], height, out_hw[0])
        for j in range(kernel[1]):
            out_c, in_c = valid_range(j, stride[1], padding[1], width, out_hw[1])
            y[:, out_r, out_c] += x_chwn[:, in_r, in_c]
    y *= 1.0 / (kernel[0] * kernel[1])
    return to_nchw(y)


def avg_pool2d_backward(
    grad_y: np.ndarray, input_hw: Pair, kernel: Pair, stride: Pair, padding: Pair, workspace: Workspace | None = None
) -> np.ndarray:
    g = to_chwn(grad_y, workspace, "grad_output")
    channels, out_h, out_w, batch = g.shape
    share = g * (1.0 / (kernel[0] * kernel[1]))
    grad_x = np.zeros((channels, *input_hw, batch), g.dtype)
    if padding == (0, 0) and not _overlapping(kernel, stride):
        grad_windows = window_view(grad_x, kernel, stride, (out_h, out_w), writeable=True)
        np.copyto(grad_windows, share)
        return to_nchw(grad_x)
    for i in range(kernel[0]):
        out_r, in_r = valid_range(i, stride[0], padding[0], input_hw[0], out_h)
        for j in range(kernel[1]):
            out_c, in_c = valid_range(j, stride[1], padding[1], input_hw[1], out_w)
            grad_x[:, in_r, in_c] += share[:, out_r, out_c]
    return to_nchw(grad_x)


# -- global average pooling ----------------------------------------------------------------
def global_avg_pool2d_forward(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) → (N, C) channel means."""
    return x.sum(axis=(2, 3)) * (1.0 / (x.shape[2] * x.shape[3]))


def global_avg_pool2d_backward(grad_y: np.ndarray, input_hw: Pair) -> np.ndarray:
    """(N, C) → (N, C, H, W): each position gets its channel's gradient divided by H·W."""
    batch, channels = grad_y.shape
    grad_x = np.empty((channels, *input_hw, batch), grad_y.dtype)
    np.multiply(grad_y.T[:, None, None, :], 1.0 / (input_hw[0] * input_hw[1]), out=grad_x)
    return to_nchw(grad_x)
