from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import numpy as np

from cnnx.engine.grad_mode import is_grad_enabled
from cnnx.engine.in_place import guard_in_place
from cnnx.engine.layer_reuse import build_keeping_weights
from cnnx.engine.layers.activations import ReLU
from cnnx.engine.layers.pooling import MaxPool2D
from cnnx.engine.module import Module, Shape, own_mode
from cnnx.errors import PluginError, ShapeError


class Sequential(Module):
    """Named layers applied in order; the body of models and of residual blocks."""

    resolves_mode_per_layer = True

    #: What holds it (``REPLACE_HINTS``): a block's body, unless a Model.
    kind = "block"

    def __init__(self, layers: Mapping[str, Module], where: str = "layers"):
        super().__init__()
        self.layers = Layers(layers, where, self.kind)
        self.where = where
        self._run_order = list(self.layers.values())
        self._input_shapes: list[tuple[int, ...]] | None = None  # of the last forward with gradients

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Module):
            # model.fc = Dense(10), as in PyTorch: forward, state_dict and optimizers would each
            # go on seeing the old layers (the run order is fixed when the model is built).
            raise layer_assignment_error(self, name, value, self.where, self.kind)
        super().__setattr__(name, value)

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        shape = input_shape
        for name, layer in self.layers.items():
            if layer.built and layer.input_shape == shape:
                # Built before (trained in another model, or called on its own) for this very
                # input: its weights are kept, as Keras and PyTorch keep a reused layer's.
                shape = layer.output_shape
                continue
            try:
                shape = build_keeping_weights(layer, shape, rng) if layer.built else layer.build(shape, rng)
            except ShapeError as exc:
                if _located(exc):
                    raise
                raise ShapeError(f"{_LOCATED} {self._location(layer)} cannot take input shape {shape}: {exc}") from exc
            except PluginError as exc:  # a layer breaking the contract (_build's return value…)
                if _located(exc):
                    raise
                raise PluginError(f"{_LOCATED} {self._location(layer)}: {exc}") from exc
        self._run_order = run_order(list(self.layers.values()))
        guard_in_place(self._run_order)
        return shape

    def forward(self, x: np.ndarray, training: bool | None = True) -> np.ndarray:
        """``training=None``: each layer in its own mode (``own_mode``)."""
        # Each layer's input shape, which its backward must return a gradient of; a forward
        # under no_grad keeps the last training forward's, as every layer keeps its caches.
        shapes = [] if is_grad_enabled() else None
        for layer in self._run_order:
            if shapes is not None:
                shapes.append(x.shape)
            x = layer.forward(x, own_mode(layer) if training is None else training)
        if shapes is not None:
            self._input_shapes = shapes
        return x

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        # Before any forward, each layer says so itself.
        shapes = self._input_shapes or [None] * len(self._run_order)
        for layer, input_shape in zip(reversed(self._run_order), reversed(shapes)):
            try:
                grad_output = layer.backward(grad_output)
            except (RuntimeError, ShapeError) as exc:
                # Only the kinds a layer raises are located here: another RuntimeError subclass
                # (submitit's UncompletedJobError from a signal handler) is not the layer's, and
                # must reach its handler as what it is.
                if _located(exc) or type(exc) not in _LAYER_ERRORS:
                    raise
                # Its own kind, named: ``except NotImplementedError`` still catches it.
                raise type(exc)(f"{_LOCATED} {self._location(layer)}: {str(exc) or type(exc).__name__}") from exc
            if grad_output is not None and input_shape is not None and grad_output.shape != input_shape:
                # Named here, at the layer that made it (a plugin's slip): the layer before it
                # would refuse it naming itself, or NumPy broadcast it into a wrong result.
                raise ShapeError(f"{_LOCATED} {self._location(layer)}: its backward returned a gradient of shape "
                                 f"{tuple(grad_output.shape)} for an input of shape {input_shape}")
        return grad_output

    def _location(self, layer: Module) -> str:
        name = next((n for n, l in self.layers.items() if l is layer), "?")
        return f"{self.where}.{name} ({type(layer).__name__})"

    def children(self) -> Iterator[tuple[str, Module]]:
        return iter(self.layers.items())

    def get_config(self) -> dict:
        return {"layers": {n: {"type": l.type_name or type(l).__name__, **l.get_config()}
                           for n, l in self.layers.items()}}


#: How to get a container with one layer replaced or added, and with one dropped, by the kind
#: of container: a model, or a block's body (whose layers are replaced in a new block).
REPLACE_HINTS = {
    "model": "to replace or add {name!r}, build a new model from these layers: "
             "Model({{**model.layers, {name!r}: new_layer}}, input_shape), whose other layers keep their weights",
    "block": "to replace or add {name!r}, build a new block from these layers, Residual({{**block.body.layers, "
             "{name!r}: new_layer}}, shortcut=block.shortcut_mode, activation=block.activation), and a new model "
             "with it; the body's other layers keep their weights",
}
DROP_HINTS = {
    "model": "to drop {name!r}, build a new model without it: "
             "Model({{n: l for n, l in model.layers.items() if n != {name!r}}}, input_shape)",
    "block": "to drop {name!r}, build a new block without it, Residual({{n: l for n, l in block.body.layers.items() "
             "if n != {name!r}}}, shortcut=block.shortcut_mode, activation=block.activation), and a new model with it",
}


def layer_assignment_error(owner: Module, name: str, layer: Module, layers: str, kind: str) -> TypeError:
    """The refusal of ``owner.name = layer`` for a container whose ``layers`` (how users know
    them) are fixed once built; ``kind`` picks the advice (``REPLACE_HINTS``)."""
    return TypeError(f"{type(owner).__name__}.{name} = {type(layer).__name__}(...) cannot add or replace a layer: "
                     f"{layers} is fixed once built; {REPLACE_HINTS[kind].format(name=name)}")


class Layers(Mapping[str, Module]):
    """A container's layers by name, read-only: its run order, parameters and state_dict are
    fixed when it is built, so ``model.layers["fc"] = Dense(10)`` or ``del`` would leave them
    running and saving another model than the mapping shows."""

    def __init__(self, layers: Mapping[str, Module], where: str, kind: str) -> None:
        self._layers = dict(layers)
        self._where = where
        self._kind = kind  # "model" or "block": what to build anew (REPLACE_HINTS)

    def __getitem__(self, name: str) -> Module:
        return self._layers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._layers)

    # A dict's own (read-only) views: reversible, as code written for a dict expects.
    def keys(self):
        return self._layers.keys()

    def values(self):
        return self._layers.values()

    def items(self):
        return self._layers.items()

    def __setitem__(self, name: str, layer: Any) -> NoReturn:
        raise TypeError(f"{self._where} cannot change once built; {REPLACE_HINTS[self._kind].format(name=name)}")

    def __delitem__(self, name: str) -> NoReturn:
        raise TypeError(f"{self._where} cannot change once built; {DROP_HINTS[self._kind].format(name=name)}")

    def __repr__(self) -> str:
        return repr(self._layers)


#: How an error named by a Sequential starts: a layer only knows its class, the user knows it
#: by its name in the spec.
_LOCATED = "layer"


#: What a layer's backward raises of its own: its refusals, a plugin's missing backward, a
#: recursion in its code. These are named with the layer.
_LAYER_ERRORS = (RuntimeError, ShapeError, NotImplementedError, RecursionError)


def _located(error: Exception) -> bool:
    """Whether a block nested inside already named the layer ``error`` comes from: the
    innermost name is the one to give."""
    return str(error).startswith(f"{_LOCATED} ")


def run_order(layers: list[Module]) -> list[Module]:
    """The layers in the order they run: each ReLU followed by a max pooling runs after it.

    Max pooling commutes with any non-decreasing function, so pool(relu(x)) == relu(pool(x))
    exactly, and the gradients agree too (ReLU's is 0 at 0, so a window whose first maximum
    is not positive passes nothing back either way). Run in that order, the ReLU and its
    backward touch a quarter of the values for a 2×2 pool. Exact types only: a subclass may
    change what either layer computes.
    """
    order = list(layers)
    i = 0
    while i < len(order) - 1:
        if type(order[i]) is ReLU and type(order[i + 1]) is MaxPool2D:
            order[i], order[i + 1] = order[i + 1], order[i]
            i += 2
        else:
            i += 1
    return order
