"""Turn a model spec (layer name → {type, **kwargs}) into layer objects."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from cnnx.engine.module import Module
from cnnx.errors import ConfigError


def layers_from_spec(spec: Mapping[str, Any], where: str) -> dict[str, Module]:
    # The registry is plain importlib.metadata; imported here so that the engine's maths
    # modules stay importable on their own.
    from cnnx.registry import layers as layer_registry

    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(
            f"{where} must be a non-empty mapping of layer name → {{type: ..., ...}}, got {spec!r}"
        )
    built: dict[str, Module] = {}
    for name, layer_spec in spec.items():
        key = f"{where}.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"layer name {name!r} at {where} must be an identifier (letters, digits, _)")
        if layer_spec is None:
            continue  # lets a preset drop a layer with `model.layers.drop1=null`
        if isinstance(layer_spec, Module):
            # A layer object (defined in a script, or trained in another model) beside specs, as
            # Model takes them: a residual body can hold it too.
            built[name] = layer_spec
            continue
        if not isinstance(layer_spec, Mapping) or "type" not in layer_spec:
            raise ConfigError(f"{key} must be a mapping with a 'type' key (or a layer object), got {layer_spec!r}")
        options = {k: v for k, v in layer_spec.items() if k != "type"}
        # The registry has already checked that it is a Module subclass.
        cls = layer_registry.get(layer_spec["type"], key)
        # Blocks build nested layers and report their errors under their own config key.
        context = {"where": key} if "where" in inspect.signature(cls).parameters else {}
        layer = layer_registry.create(layer_spec["type"], options, key, **context)
        layer.type_name = layer_spec["type"]
        built[name] = layer
    if not built:
        raise ConfigError(f"{where} has no layers left")
    return built
