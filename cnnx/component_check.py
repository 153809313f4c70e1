"""The components a sweep's jobs share, checked before the sweep starts: their types name
registered components and their option names fit those components' factories.

A run makes these checks as it builds each component (``Registry.create``), after the sweep's
parent run exists and, for the model, after its data is loaded: a typo that no swept key
touches (``model.layers.relu1.type=tanhh optimizer.lr=0.1,0.2``) would fail every job alike,
each leaving a FAILED run. Nothing is built here, and no value is judged: values may be
interpolations of the keys the sweep varies, which the sweep's config holds only as defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnx import registry

#: What a run passes to a component's factory besides its options (``cnnx.app.build_run``).
SUPPLIED = {
    "optimizer": ("named_parameters",),
    "scheduler": ("optimizer", "epochs", "steps_per_epoch"),
}

#: The run's components, in the order a run builds them (so a sweep names the one a run would).
SECTIONS = (("dataset", registry.datasets), ("model.layers", registry.layers), ("loss", registry.losses),
            ("optimizer", registry.optimizers), ("scheduler", registry.schedulers))


def _varies(key: str, node: Any, swept: Collection[str], names_only: bool = False) -> bool:
    """Whether a swept key may give the component at config key ``key`` another type or other
    option names than ``node`` has: it varies the component or a section above it (``model``
    for ``model.layers.relu1``), its type, or an option ``node`` lacks (added with ``+``).
    ``names_only``: ``node`` maps names to components (``model.layers``), each checked alone."""
    for varied in swept:
        if varied == key or key.startswith(f"{varied}."):
            return True
        if varied.startswith(f"{key}.") and not names_only:
            option = varied[len(key) + 1:].split(".")[0]
            if option == "type" or not OmegaConf.is_dict(node) or option not in node:
                return True
    return False


def _components(cfg: DictConfig, swept: Collection[str]) -> Iterator[tuple[str, registry.Registry, Any]]:
    """(config key, registry, its config node) of each component no swept key varies; blocks'
    layers (``model.layers.block1.layers.conv1``) are checked with their blocks."""
    for key, components in SECTIONS:
        node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if key != "model.layers":
            if not _varies(key, node, swept):
                yield key, components, node
        elif OmegaConf.is_dict(node) and not _varies(key, node, swept, names_only=True):
            yield from _layers(node, key, swept)


def _layers(spec: DictConfig, where: str, swept: Collection[str]) -> Iterator[tuple[str, registry.Registry, Any]]:
    for name in spec:
        key = f"{where}.{name}"
        # An interpolation that does not resolve here (of a key only the jobs have) reads as None.
        node = OmegaConf.select(spec, str(name), throw_on_resolution_failure=False)
        if node is not None and not _varies(key, node, swept):  # null: a layer a preset dropped
            yield key, registry.layers, node


def check_components(cfg: DictConfig, swept: Collection[str], complete: bool = True) -> None:
    """Raise the error a run would raise for the first component, of those no swept key
    varies, whose type is not registered or whose option names its factory does not take (or,
    when ``cfg`` is ``complete``, that lacks an option without a default)."""
    if any(key.replace("/", ".").split(".")[0] not in cfg for key in swept):
        return  # a swept preset (+experiment=a,b) may set any key to anything
    for key, components, node in _components(cfg, swept):
        _check(key, components, node, swept, complete)


def _check(key: str, components: registry.Registry, node: Any, swept: Collection[str], complete: bool) -> None:
    if not OmegaConf.is_dict(node) or "type" not in node or OmegaConf.is_interpolation(node, "type"):
        return  # left to the run, whose own checks name it
    options = dict.fromkeys(option for option in node if option != "type")
    supplied = _supplied(key, components, node.type)
    block = supplied == ("where",)
    components.check(node.type, options, key, *supplied, complete=complete)
    inner = OmegaConf.select(node, "layers", throw_on_resolution_failure=False) if block else None
    if OmegaConf.is_dict(inner):
        # A block's layers are configured under its own key, where a run reports them.
        for inner_key, inner_components, inner_node in _layers(inner, f"{key}.layers", swept):
            _check(inner_key, inner_components, inner_node, swept, complete)


def check_option_name(component_key: str, component_type: str, option: str) -> None:
    """Raise the error a run would raise for ``option`` of the component at ``component_key``
    (``optimizer``, ``model.layers.conv1``) when its factory does not take it; nothing when it
    does, or when the key holds no component cnnx builds."""
    sections = dict(SECTIONS)
    components = sections.get(component_key) or (registry.layers if component_key.startswith("model.layers.")
                                                  else None)
    if components is None:
        return
    supplied = _supplied(component_key, components, component_type)
    components.check(component_type, {option: None}, component_key, *supplied, complete=False, hint=False)


def _supplied(key: str, components: registry.Registry, component_type: str) -> tuple[str, ...]:
    """What a run passes the factory besides its options; a block gets its config key
    (``cnnx.engine.spec.layers_from_spec``)."""
    if components is registry.layers and "where" in inspect.signature(components.get(component_type, key)).parameters:
        return ("where",)
    return SUPPLIED.get(key, ())
