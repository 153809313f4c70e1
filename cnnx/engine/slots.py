"""``layer.weight`` and ``bn.running_mean`` for parameters and buffers a layer keeps in its
``params`` and ``buffers`` dicts, read and assigned as on a ``torch.nn.Module``.

Without a slot, reading works (``Module.__getattr__``), but an assignment only adds an
attribute beside the dict, which forward and ``state_dict`` never read: silently nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.engine.parameter import Parameter
from cnnx.errors import ShapeError


class _Slot:
    store = ""  # the Module dict the slot reads and writes

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, layer: Any, owner: type | None = None) -> Any:
        if layer is None:
            return self
        held = vars(layer).get(self.store) or {}
        if self.name not in held:
            raise layer.missing_attribute(self.name)  # not built yet, or no such entry (no bias)
        return held[self.name]

    def _check_shape(self, layer: Any, value: np.ndarray) -> None:
        current = (vars(layer).get(self.store) or {}).get(self.name)
        if current is not None:
            shape = getattr(current, "data", current).shape
            if value.shape != shape:
                raise ShapeError(f"{type(layer).__name__}.{self.name} has shape {shape}; got an array of shape "
                                 f"{value.shape}")


class ParameterSlot(_Slot):
    """A trainable parameter: assigning replaces the ``Parameter`` (an optimizer built before
    keeps the old one, as in PyTorch), its values cast to the layer's dtype; anything else than
    a Parameter is refused, as torch does."""

    store = "params"

    def __set__(self, layer: Any, value: Any) -> None:
        if not isinstance(value, Parameter):
            raise TypeError(f"cannot assign {type(value).__name__} as parameter {self.name!r} of "
                            f"{type(layer).__name__} (a cnnx Parameter expected; to change the values in place, "
                            f"assign to {self.name}.data[...])")
        data = np.asarray(value.data)
        if data.dtype.kind not in "fiub":
            raise TypeError(f"cannot assign a Parameter of dtype {data.dtype} as {type(layer).__name__}.{self.name}; "
                            f"expected real numbers")
        self._check_shape(layer, data)
        # NumPy's float64 default (Parameter(rng.standard_normal(shape))) would make the model's
        # outputs and state_dict float64: cast, as buffers are, so that float32 holds end to end.
        value.data = data.astype(layer.dtype, copy=False)
        layer.params[self.name] = value


class BufferSlot(_Slot):
    """A buffer (running statistics): assigning replaces its values, cast to the layer's dtype."""

    store = "buffers"

    def __set__(self, layer: Any, value: Any) -> None:
        array = np.array(value, dtype=layer.dtype)
        self._check_shape(layer, array)
        layer.buffers[self.name] = array
