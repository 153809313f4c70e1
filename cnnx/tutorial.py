"""The original tutorial's ``CNN`` API, on top of the cnnx engine.

The tutorial's usage example runs unchanged but for its import (``from cnnx.tutorial import
CNN``): layers are added one by one, ``fit(X, y, epochs)`` trains and ``predict(X)`` returns
labels. Underneath it is a normal cnnx model, loss and optimizer — vectorised, with correct
batch gradients and weights updated by an optimizer, not inside ``backward``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.engine.functional.softmax import sigmoid, softmax
from cnnx.engine.layers.activations import ReLU, Sigmoid, Softmax
from cnnx.engine.layers.conv import Conv2D
from cnnx.engine.layers.dense import Dense
from cnnx.engine.layers.flatten import Flatten
from cnnx.engine.layers.pooling import AvgPool2D, MaxPool2D
from cnnx.engine.losses.bce import BCELoss
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.model import Model, layout_hint
from cnnx.engine.module import Module
from cnnx.engine.optim.sgd import SGD
from cnnx.errors import ConfigError, ShapeError

_ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "linear": None, None: None}


class CNN:
    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, seed: int = 0):
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.seed = seed
        self.loss_history: list[float] = []
        self._layers: dict[str, Module] = {}
        # Sizes the user declared, checked against the inferred ones when the model is built.
        self._declared: dict[str, tuple[str, int]] = {}
        self.model: Model | None = None
        self._optimizer: SGD | None = None
        self._loss: Any = None

    # -- building, as in the tutorial ----------------------------------------------------------
    def _add(self, prefix: str, layer: Module) -> str:
        name = f"{prefix}{sum(1 for n in self._layers if n.startswith(prefix)) + 1}"
        self._layers[name] = layer
        self.model = None
        return name

    def add_conv_layer(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0) -> CNN:
        name = self._add("conv", Conv2D(out_channels, kernel_size, stride=stride, padding=padding))
        self._declared[name] = ("in_channels", in_channels)
        return self

    def add_pool_layer(self, pool_type: str = "max", pool_size: int = 2, stride: int = 2) -> CNN:
        if pool_type not in ("max", "avg", "average"):
            raise ConfigError(f"pool_type must be 'max' or 'avg', got {pool_type!r}")
        cls = MaxPool2D if pool_type == "max" else AvgPool2D
        self._add("pool", cls(pool_size, stride=stride))
        return self

    def add_flatten(self) -> CNN:
        self._add("flatten", Flatten())
        return self

    def add_dense(self, input_size: int, output_size: int, activation: str | None = "relu") -> CNN:
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"activation must be relu, sigmoid or linear, got {activation!r}")
        name = self._add("dense", Dense(output_size))
        self._declared[name] = ("input_size", input_size)
        if _ACTIVATIONS[activation] is not None:
            self._add(activation, _ACTIVATIONS[activation]())
        return self

    def _build(self, input_shape: tuple[int, ...]) -> Model:
        model = Model(self._layers, input_shape, np.random.default_rng(self.seed), where="cnn")
        for name, (what, declared) in self._declared.items():
            actual = model.layers[name].input_shape[0]
            if actual != declared:
                raise ShapeError(f"layer {name} was declared with {what}={declared}, but its input has {actual}")
        return model

    def _check_layout(self, shape: tuple[int, ...]) -> None:
        """Name channels-last or channel-less input as the model does, before building: the
        model is built for whatever shape comes first, so a later layer would fail instead,
        with an error about its own input."""
        first = next(iter(self._layers), None)
        what, channels = self._declared.get(first, (None, None))
        if what != "in_channels" or (len(shape) == 4 and shape[1] == channels):
            return
        expected = (channels, *shape[1:3]) if len(shape) == 4 else (channels, *shape[1:])
        hint = layout_hint(expected, shape) if len(expected) == 3 else ""
        raise ShapeError(
            f"layer {first} was declared with in_channels={channels}, so X must be shaped "
            f"(N, {channels}, H, W), got {shape}{hint}"
        )

    # -- training, as in the tutorial ------------------------------------------------------
    def forward(self, X: np.ndarray) -> np.ndarray:
        return self._ensure_model(X).forward(np.asarray(X, np.float32), training=False)

    def _ensure_model(self, X: np.ndarray) -> Model:
        if self.model is None:
            self._check_layout(tuple(np.shape(X)))
            self.model = self._build(tuple(np.shape(X)[1:]))
            self._optimizer = SGD(self.model.named_parameters(), lr=self.learning_rate, momentum=self.momentum)
        return self.model

    def _binary(self) -> bool:
        return self.model.output_shape == (1,)

    def fit(self, X: np.ndarray, y: np.ndarray, epochs: int = 10, verbose: bool = True,
            batch_size: int | None = None) -> list[float]:
        """Full-batch gradient descent by default, as the tutorial does; ``batch_size`` for mini-batches."""
        X = np.asarray(X, np.float32)
        model = self._ensure_model(X)
        binary = self._binary()
        labels = np.asarray(y).reshape(len(X), -1)
        if binary:
            targets = labels[:, 0].astype(np.float32)
            ends_with_sigmoid = isinstance(next(reversed(model.layers.values())), Sigmoid)
            self._loss = BCELoss(from_logits=not ends_with_sigmoid)
        else:
            targets = labels.argmax(axis=1) if labels.shape[1] > 1 else labels[:, 0].astype(np.int64)
            self._loss = CrossEntropyLoss()
        rng = np.random.default_rng(self.seed)
        size = batch_size or len(X)
        for epoch in range(epochs):
            order = rng.permutation(len(X)) if batch_size else np.arange(len(X))
            total = 0.0
            for start in range(0, len(X), size):
                index = order[start:start + size]
                outputs = model.forward(X[index], training=True)
                value, grad = self._loss(outputs, targets[index])
                model.backward(grad, input_grad=False)
                self._optimizer.step()
                total += value * len(index)
            self.loss_history.append(total / len(X))
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}, Loss: {self.loss_history[-1]:.6f}")
        return self.loss_history

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities, whatever the last layer: a binary model's (N, 1) chance of class 1,
        else (N, K) over the classes. A model ending in a linear dense layer gives logits,
        which pass through a sigmoid or softmax here, as its loss applies one in training."""
        model = self._ensure_model(X)
        outputs = model.predict(np.asarray(X, np.float32))
        if isinstance(next(reversed(model.layers.values())), (Sigmoid, Softmax)):
            return outputs
        return sigmoid(outputs) if self._binary() else softmax(outputs, axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Binary models: ``(probability > 0.5)`` as ints, shape (N, 1), like the tutorial; else argmax."""
        probabilities = self.predict_proba(X)
        if probabilities.shape[1] == 1:
            return (probabilities > 0.5).astype(int)
        return probabilities.argmax(axis=1)
