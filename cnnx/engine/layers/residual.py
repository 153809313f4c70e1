from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from cnnx.engine.in_place import OutputUse
from cnnx.engine.module import Module, Shape, own_mode
from cnnx.engine.sequential import Sequential, layer_assignment_error
from cnnx.engine.spec import layers_from_spec
from cnnx.errors import ConfigError, ShapeError

SHORTCUTS = ("auto", "identity", "projection")
ACTIVATIONS = ("relu", None)


class Residual(Module):
    """``activation(body(x) + shortcut(x))``: a ResNet block whose body is a nested layer spec.

    The shortcut is the identity when the body keeps the shape, otherwise (or when asked) a
    1×1 convolution without bias whose stride maps the input grid onto the body's output grid,
    as in ResNet's projection shortcut (option B).
    """

    sample_rank = 3

    backward_reads_output = OutputUse.NONE
    resolves_mode_per_layer = True

    def __init__(self, layers: Mapping[str, Any], shortcut: str = "auto",
                 activation: str | None = "relu", where: str = "residual"):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ConfigError(f"{where}.shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"{where}.activation must be 'relu' or null, got {activation!r}")
        self.shortcut_mode = shortcut
        self.activation = activation
        self.where = where
        body_layers = layers_from_spec(layers, f"{where}.layers")
        if "shortcut" in body_layers:
            raise ConfigError(f"{where}.layers.shortcut: the name 'shortcut' is reserved for the block's shortcut")
        self.body = Sequential(body_layers, f"{where}.layers")
        self.shortcut: Module | None = None
        self._active: np.ndarray | None = None
        self._output_seen: tuple[int, ...] | None = None  # what backward's gradient must be

    def __setattr__(self, name: str, value: Any) -> None:
        # Once built, block.bn = BatchNorm2D() (or a new shortcut) would be read back, but never
        # run, saved or optimised. (A subclass sets up its own sub-layers before that.)
        if (isinstance(value, Module) or name in ("body", "shortcut")) and self.built:
            raise layer_assignment_error(self, name, value, f"{self.where}.layers", "block")
        super().__setattr__(name, value)

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        out_shape = self.body.build(input_shape, rng)
        if len(input_shape) != 3 or len(out_shape) != 3:
            raise ShapeError(
                f"a residual block needs (C, H, W) input and body output, got {input_shape} → {out_shape}"
            )
        needs_projection = out_shape != input_shape
        if self.shortcut_mode == "identity" and needs_projection:
            raise ShapeError(
                f"identity shortcut cannot add input {input_shape} to body output {out_shape}; "
                "use shortcut: projection (or auto)"
            )
        if self.shortcut_mode == "projection" or needs_projection:
            from cnnx.engine.layers.conv import Conv2D

            (_, in_h, in_w), (out_c, out_h, out_w) = input_shape, out_shape
            stride_h, stride_w = -(-in_h // out_h), -(-in_w // out_w)
            if (in_h - 1) // stride_h + 1 != out_h or (in_w - 1) // stride_w + 1 != out_w:
                raise ShapeError(
                    f"no 1×1 strided projection maps input {input_shape} onto body output {out_shape}"
                )
            stride = (stride_h, stride_w)
            # The same projection at another image size stays the same layer: a block reused
            # there keeps its weights (``cnnx.engine.layer_reuse``).
            if self.shortcut is None or (self.shortcut.out_channels, self.shortcut.stride) != (out_c, stride):
                vars(self)["shortcut"] = Conv2D(out_c, 1, stride=stride, bias=False)  # past the user's guard
            self.shortcut.build(input_shape, rng)
        else:
            vars(self)["shortcut"] = None
        return out_shape

    def forward(self, x: np.ndarray, training: bool | None = True) -> np.ndarray:
        """``training=None``: each layer of the block in its own mode (``own_mode``)."""
        x = self.in_own_dtype(x)
        out = self.body.forward(x, training)
        shortcut = self.shortcut
        out = out + (x if shortcut is None else shortcut.forward(x, own_mode(shortcut) if training is None else training))
        if self.activation == "relu":
            self._active = out > 0
            out *= self._active
        self._output_seen = out.shape
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._output_seen is None:
            raise self._backward_before_forward()
        if grad_output.shape != self._output_seen:
            raise self.wrong_gradient(grad_output, self._output_seen)
        grad_output = self.in_own_dtype(grad_output)
        if self.activation == "relu":
            grad_output = grad_output * self._active
        grad_input = self.body.backward(grad_output)
        if self.shortcut is None:
            return grad_input + grad_output
        return grad_input + self.shortcut.backward(grad_output)

    def children(self) -> Iterator[tuple[str, Module]]:
        yield from self.body.children()
        if self.shortcut is not None:
            yield "shortcut", self.shortcut

    def get_config(self) -> dict[str, Any]:
        return {**self.body.get_config(), "shortcut": self.shortcut_mode, "activation": self.activation}
