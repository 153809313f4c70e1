"""2-D convolution (cross-correlation, as in PyTorch) forward and backward via im2col + GEMM.

Arrays go in and come out NCHW; outputs are views of CHWN memory (see ``im2col``), which is
also the order in which they are computed: with the batch innermost, the GEMM
``weight (O, C·kh·kw) @ col (C·kh·kw, OH·OW·N)`` writes the output's memory directly and both
operands are contiguous, so BLAS never needs a copy.

The bias rides in the GEMM: the column buffer carries an extra row of ones and the weight
matrix an extra column holding the bias. That saves a pass over the output in forward, and in
backward the same GEMM that yields the weight gradient yields the bias gradient.
"""

from __future__ import annotations

import numpy as np

from cnnx.engine.functional.im2col import Pair, Workspace, col2im, im2col, output_size, to_chwn, to_nchw


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: Pair,
    padding: Pair,
    workspace: Workspace | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (N, C, H, W), ``weight`` (O, C, kh, kw), ``bias`` (O,) or None → (output, columns).

    The columns are what ``conv2d_backward`` needs; they live in ``workspace`` (when given), so
    they are only valid until the next forward call with the same workspace.
    """
    workspace = workspace if workspace is not None else Workspace()
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h = output_size(height, kh, stride[0], padding[0])
    out_w = output_size(width, kw, stride[1], padding[1])
    reduced = channels * kh * kw
    rows = reduced + (bias is not None)
    x_chwn = to_chwn(x, workspace, "input")
    col = workspace.get("col", (rows, out_h * out_w * batch), x.dtype, fill=0)
    im2col(x_chwn, (kh, kw), stride, padding, out=col[:reduced].reshape(channels, kh, kw, out_h, out_w, batch))
    weight_matrix = weight.reshape(out_channels, reduced)
    if bias is not None:
        col[reduced] = 1
        weight_matrix = np.concatenate((weight_matrix, bias[:, None]), axis=1)
    y = weight_matrix @ col
    return to_nchw(y.reshape(out_channels, out_h, out_w, batch)), col


def conv2d_backward(
    grad_y: np.ndarray,
    weight: np.ndarray,
    col: np.ndarray,
    input_hw: Pair,
    stride: Pair,
    padding: Pair,
    workspace: Workspace | None = None,
    input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients (input, weight, bias) from the output gradient and the forward's columns.

    The bias gradient is None when the forward ran without a bias, the input gradient None
    with ``input_grad=False``.
    """
    workspace = workspace if workspace is not None else Workspace()
    out_channels, channels, kh, kw = weight.shape
    batch, _, out_h, out_w = grad_y.shape
    reduced = channels * kh * kw
    g = to_chwn(grad_y, workspace, "grad_output")
    g = g.reshape(out_channels, -1)
    # col @ g.T rather than g @ col.T: OpenBLAS runs the long-reduction product 1.3–2× faster
    # with the long axis as the inner dimension of the left operand.
    grad_params = col @ g.T
    grad_weight = np.ascontiguousarray(grad_params[:reduced].T).reshape(weight.shape)
    grad_bias = grad_params[reduced].copy() if col.shape[0] > reduced else None
    if not input_grad:
        return None, grad_weight, grad_bias
    grad_col = np.matmul(weight.reshape(out_channels, reduced).T, g, out=workspace.get("grad_col", (reduced, g.shape[1]), g.dtype))
    grad_x = col2im(grad_col.reshape(channels, kh, kw, out_h, out_w, batch), input_hw, stride, padding)
    return to_nchw(grad_x), grad_weight, grad_bias

