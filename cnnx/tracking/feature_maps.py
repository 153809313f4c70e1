"""What each conv layer responds to: its output for a few fixed input images."""

from __future__ import annotations

import numpy as np

from cnnx.engine.grad_mode import no_grad
from cnnx.engine.model import Model


def conv_layers(model: Model) -> list[str]:
    """Dotted names of every conv layer (4-D weight), nested blocks included, in order."""
    return [name for name, layer in model.named_layers()
            if getattr(layer, "params", {}).get("weight") is not None
            and layer.params["weight"].data.ndim == 4]


def conv_activations(model: Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Each conv layer's output ``(N, C, h, w)`` for the normalised images ``x``, eval mode.

    One forward pass: every conv layer's ``forward`` is shadowed on the instance by a
    recording wrapper, then restored, so nested layers (residual blocks) are seen too without
    the engine knowing about it.
    """
    layers = dict(model.named_layers())
    captured: dict[str, np.ndarray] = {}

    def recorder(name: str, forward):
        def record(inputs, training=False):
            output = forward(inputs, training)
            captured[name] = output.copy()
            return output
        return record

    names = conv_layers(model)
    try:
        for name in names:
            layers[name].forward = recorder(name, layers[name].forward)
        with no_grad():
            model.forward(x, training=False)
    finally:
        for name in names:
            layers[name].__dict__.pop("forward", None)
    return {name: captured[name] for name in names if name in captured}
