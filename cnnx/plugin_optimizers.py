"""A plugin optimizer tried before training, as plugin layers and losses are.

Two steps on copies of the model's parameters, then its state saved and loaded into a second
instance: a wrong ``_update`` signature, ``slots`` written as a tuple, a float64 update or a
state that does not reload would otherwise surface as a traceback at the first step (or the
first checkpoint), after the data is loaded and an MLflow run created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cnnx import registry
from cnnx.engine.model import Model
from cnnx.engine.parameter import Parameter
from cnnx.errors import CnnxError, PluginError, flat_message


def check_plugin_optimizer(name: str, options: Mapping[str, Any], model: Model) -> None:
    if registry.normalise_distribution(registry.optimizers.component(name).distribution) == "cnnx":
        return
    label = registry.optimizers.label(name)
    rng = np.random.default_rng(0)
    try:
        params = _copies(model)
        trial = registry.optimizers.create(name, options, "optimizer", named_parameters=params)
        for _ in range(2):
            for _, param in params:
                param.grad = rng.standard_normal(param.data.shape).astype(param.data.dtype)
            trial.step()
        twin = registry.optimizers.create(name, options, "optimizer", named_parameters=_copies(model))
        twin.load_state_dict(trial.state_dict())
    except CnnxError as error:
        raise PluginError(f"{label} fails a trial step on a copy of the model's parameters: "
                          f"{flat_message(error)}") from None
    except Exception as exc:  # noqa: BLE001 — a plugin's crash is the plugin's, named as such
        raise PluginError(f"{label} fails a trial step on a copy of the model's parameters: "
                          f"{type(exc).__name__}: {flat_message(exc)}") from exc
    for param_name, param in params:
        if param.data.dtype != np.float32 or param.data.shape != dict(model.named_parameters())[param_name].shape:
            raise PluginError(f"{label}: step() left parameter {param_name!r} {param.data.dtype} {param.data.shape}; "
                              f"expected it updated in place, float32 (cast scalars with np.float32 or use Python floats)")


def _copies(model: Model) -> list[tuple[str, Parameter]]:
    return [(name, Parameter(param.data.copy())) for name, param in model.named_parameters()]
