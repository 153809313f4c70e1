"""What the layers over images (convolution, pooling, batch norm) take as input.

Built for a per-sample ``(C, H, W)``, they run on ``(N, C, H, W)`` batches of any height and
width their window fits, as PyTorch's do. Their ``forward`` compares ``x.shape[1:]`` with the
built ``input_shape`` (one tuple compare) and calls these checks only when the two differ.
"""

from __future__ import annotations

import numpy as np

from cnnx.engine.module import Module, Shape
from cnnx.errors import ShapeError


def window_fits(height: int, width: int, kernel: tuple[int, int], padding: tuple[int, int]) -> bool:
    """Whether at least one ``kernel`` window fits in the padded ``height`` × ``width``."""
    return height + 2 * padding[0] >= kernel[0] and width + 2 * padding[1] >= kernel[1]


def check_image_shape(name: str, input_shape: Shape, window: str = "") -> None:
    """At build time: refuse a per-sample shape other than (C, H, W); ``window`` describes the
    layer's window for the message."""
    if len(input_shape) != 3:
        detail = f" ({window})" if window else ""
        raise ShapeError(f"{name} needs a per-sample input of shape (C, H, W), got {input_shape}{detail}")


def check_window_in_image(name: str, input_shape: Shape, window: str, kernel: tuple[int, int],
                          padding: tuple[int, int]) -> None:
    """At build time: refuse a per-sample (C, H, W) too small for one window."""
    if not window_fits(input_shape[1], input_shape[2], kernel, padding):
        raise ShapeError(f"{name} {window} with padding {padding} is larger than the input {input_shape} (C, H, W)")


def check_image_batch(layer: Module, x: np.ndarray, *, channels: bool = False,
                      kernel: tuple[int, int] | None = None, padding: tuple[int, int] = (0, 0)) -> None:
    """In ``forward``, for an ``x`` whose shape differs from the built one: refuse it unless it
    is (N, C, H, W) — with the built C when ``channels`` — and ``kernel`` fits in it."""
    if layer.input_shape is None:
        raise layer._refuse_input(x, "")
    expected = f"(N, {layer.input_shape[0]}, H, W)" if channels else "(N, C, H, W)"
    if x.ndim != 4 or (channels and x.shape[1] != layer.input_shape[0]):
        raise layer._refuse_input(x, f"expected {expected}")
    if kernel is not None and not window_fits(x.shape[2], x.shape[3], kernel, padding):
        raise layer._refuse_input(x, f"kernel {kernel} with padding {padding} is larger than its height × width")
