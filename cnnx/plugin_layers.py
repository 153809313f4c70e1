"""A plugin layer checked before training — its ``get_config`` against its options, the dtype
of its parameters and buffers, then forward and backward on a tiny batch and a forward in
evaluation mode — so that its slips stop the run in one line naming the layer, its config key
and its distribution.

The engine keeps no per-layer checks in its hot path, and cnnx's own layers are proven by the
test suite; a plugin's are proven only if its author ran the conformance kit. A layer that
returns float64 would otherwise turn the rest of the network float64 (silently twice as slow,
and its gradients cast back on every update), and one whose output disagrees with the shape it
declared fails deep inside another layer, epochs from its cause.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from cnnx import registry
from cnnx.engine.grad_mode import no_grad
from cnnx.engine.model import Model
from cnnx.engine.module import Module
from cnnx.errors import PluginError

PROBE_BATCH = 2


def check_plugin_layers(model: Model, spec: Mapping[str, Any], where: str = "model.layers") -> None:
    """Check ``get_config`` against the options in ``spec`` (the model's layer mapping) and run
    forward and backward once on a copy of every layer that a plugin registers."""
    for name, layer in model.named_layers():
        if layer.type_name is None:
            continue
        component = registry.layers.component(layer.type_name)
        if registry.normalise_distribution(component.distribution) == "cnnx":
            continue
        label = f"layer {layer.type_name!r} at {_config_key(where, name)} (from {component.origin})"
        check_get_config(layer, _options_at(spec, name), label)
        _probe(copy.deepcopy(layer), label)


def check_get_config(layer: Module, options: Mapping[str, Any], label: str) -> None:
    """Every option a layer was built with must come back from ``get_config()``: the model's
    ``get_config``, its ``repr`` and specs saved from it rebuild layers from those."""
    config = layer.get_config()
    if not isinstance(config, Mapping):
        raise PluginError(f"{label}: get_config() returned {type(config).__name__}; expected a dict")
    missing = [key for key in options if key not in config]
    if missing:
        given = ", ".join(f"{key}={options[key]!r}" for key in missing)
        raise PluginError(
            f"{label}: get_config() returns {dict(config)!r}, without {given} given in the config; "
            f"expected every constructor argument (define get_config() returning them)"
        )


def _config_key(where: str, dotted: str) -> str:
    """The config key of the layer at ``dotted``: a block's layers are under its ``layers`` key
    (``block1.bn1`` is ``model.layers.block1.layers.bn1``)."""
    *blocks, name = dotted.split(".")
    return ".".join([where, *(f"{block}.layers" for block in blocks), name])


def _options_at(spec: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
    """The options of the layer at ``dotted`` (``block.conv1``: a block's nested layer)."""
    *blocks, name = dotted.split(".")
    for block in blocks:
        spec = spec[block]["layers"]
    return {k: v for k, v in spec[name].items() if k != "type"}


def _probe(layer, label: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((PROBE_BATCH, *layer.input_shape), dtype=np.float32)
    # First: a float64 weight makes a correct forward return float64, which is not its fault.
    _check_state_dtypes(layer, label)
    try:
        y = layer.forward(x, training=True)
        _expect(label, "forward", y, (PROBE_BATCH, *layer.output_shape))
        grad = layer.backward(np.ones_like(y))
        if grad is not None or layer.needs_input_grad:  # None only when no input gradient is wanted
            _expect(label, "backward", grad, x.shape)
        check_gradients_assigned(layer, label)
        for pname, param in layer.named_parameters():
            _expect(label, f"backward's gradient of parameter {pname!r}", param.grad, param.data.shape)
        # Validation and the final test run it so: a float64 output there would go unseen.
        with no_grad():
            _expect(label, "forward(training=False)", layer.forward(x, training=False), y.shape)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 — a plugin's crash is the plugin's, named as such
        message = " ".join(str(exc).split())
        raise PluginError(
            f"{label} fails on a float32 batch shaped {x.shape}: {type(exc).__name__}: {message}"
        ) from exc


def _check_state_dtypes(layer: Module, label: str) -> None:
    """Parameters and buffers are float32, as cnnx's own (``Parameter(np.ones(c))`` is float64)."""
    state = [("parameter", n, p.data) for n, p in layer.named_parameters()]
    state += [("buffer", n, b) for n, b in layer.named_buffers()]
    for kind, name, array in state:
        dtype = getattr(array, "dtype", None)
        if dtype != np.float32:
            raise PluginError(f"{label}: {kind} {name!r} is {dtype or type(array).__name__}; expected float32 "
                              f"(create it with dtype=np.float32 in _build, or cast with .astype(np.float32))")


def check_gradients_assigned(layer: Module, label: str) -> None:
    """After ``backward``, every parameter has a gradient (the conformance kit checks this too)."""
    for pname, param in layer.named_parameters():
        if param.grad is None:
            raise PluginError(f"{label}: backward left the gradient of parameter {pname!r} unset; expected "
                              f"it to assign self.params[{pname!r}].grad, float32 shaped {param.data.shape}")


def _expect(label: str, what: str, array, shape: tuple[int, ...]) -> None:
    if array is None:
        raise PluginError(f"{label}: {what} returned None; expected a float32 array shaped {shape} (a missing return?)")
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
            if what.startswith("forward") else
            f"{label}: {what} returned shape {array.shape}; expected {shape}"
        )
