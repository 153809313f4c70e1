"""A plugin layer tried on a tiny batch before training, so that its slips stop the run in one
line naming the layer, its config key and its distribution.

The engine keeps no per-layer checks in its hot path, and cnnx's own layers are proven by the
test suite; a plugin's are proven only if its author ran the conformance kit. A layer that
returns float64 would otherwise turn the rest of the network float64 (silently twice as slow,
and its gradients cast back on every update), and one whose output disagrees with the shape it
declared fails deep inside another layer, epochs from its cause.
"""

from __future__ import annotations

import copy

import numpy as np

from cnnx import registry
from cnnx.engine.model import Model
from cnnx.errors import PluginError

PROBE_BATCH = 2


def check_plugin_layers(model: Model, where: str = "model.layers") -> None:
    """Run forward and backward once on a copy of every layer that a plugin registers."""
    for name, layer in model.named_layers():
        if layer.type_name is None:
            continue
        component = registry.layers.component(layer.type_name)
        if registry.normalise_distribution(component.distribution) == "cnnx":
            continue
        label = f"layer {layer.type_name!r} at {where}.{name} (from {component.origin})"
        _probe(copy.deepcopy(layer), label)


def _probe(layer, label: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((PROBE_BATCH, *layer.input_shape), dtype=np.float32)
    try:
        y = layer.forward(x, training=True)
        _expect(label, "forward", y, (PROBE_BATCH, *layer.output_shape))
        grad = layer.backward(np.ones_like(y))
        if grad is not None:  # allowed when needs_input_grad is False
            _expect(label, "backward", grad, x.shape)
        for pname, param in layer.named_parameters():
            _expect(label, f"backward's gradient of parameter {pname!r}", param.grad, param.data.shape)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 — a plugin's crash is the plugin's, named as such
        message = " ".join(str(exc).split())
        raise PluginError(
            f"{label} fails on a float32 batch shaped {x.shape}: {type(exc).__name__}: {message}"
        ) from exc


def _expect(label: str, what: str, array, shape: tuple[int, ...]) -> None:
    dtype = getattr(array, "dtype", None)
    if dtype != np.float32:
        raise PluginError(
            f"{label}: {what} returned {dtype or type(array).__name__} for float32 input; expected "
            f"float32 (cnnx runs in float32: cast with .astype(np.float32, copy=False))"
        )
    if array.shape != shape:
        raise PluginError(
            f"{label}: {what} returned shape {array.shape}; expected {shape} (build() declared "
            f"output shape {shape[1:]} per sample)"
            if what == "forward" else
            f"{label}: {what} returned shape {array.shape}; expected {shape}"
        )
