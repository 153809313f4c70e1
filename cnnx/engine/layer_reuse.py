"""A built layer put into a model for another input than it was built for.

Transfer learning at another resolution (``Model({"conv1": trained.layers["conv1"], …},
(1, 16, 16))`` for a conv trained on 8×8 images) must keep the trained weights, as PyTorch
keeps a reused module's: a convolution's weights do not depend on the image size. Building the
layer again would draw new ones, and since the layer object is shared, the trained model would
lose its weights as well. So the layer is built for the new input (its shapes and scratch
follow it) and then gets its own parameters and buffers back; when the new input would need
weights of other shapes (another channel or feature count), nothing changes and the build is
refused, as PyTorch refuses such an input at the first forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from cnnx.engine.module import Module, Shape
from cnnx.engine.parameter import Parameter
from cnnx.errors import ShapeError


def build_keeping_weights(layer: Module, input_shape: Shape, rng: np.random.Generator) -> Shape:
    """Build the already built ``layer`` for ``input_shape`` with the weights it holds; a
    ShapeError, with the layer left exactly as it was, when they do not fit that input."""
    modules = list(layer.modules())
    held = _state_shapes(layer)
    old_input = layer.input_shape
    with restored_on_failure(modules) as saved:
        output_shape = layer.build(input_shape, rng)
        needed = _state_shapes(layer)
        if needed != held or list(layer.modules()) != modules:
            changes = [f"{name} {held.get(name, ('none',))[0]} → {needed.get(name, ('none',))[0]}"
                       for name in dict.fromkeys([*held, *needed]) if held.get(name) != needed.get(name)]
            misfit = (f"its weights do not fit {tuple(input_shape)} ({', '.join(changes)})" if changes else
                      f"at {tuple(input_shape)} it would need other sub-layers than those holding its weights")
            raise ShapeError(
                f"it was built for input {old_input}, and {misfit}; a built layer keeps its weights, so it only "
                f"goes where they fit: use a new layer here"
            )
    for module, before in zip(modules, saved):
        # The same Parameter objects (an optimizer of the trained model keeps updating them) and
        # buffers; everything else (recorded shapes, scratch) is the new build's.
        module.params = before["params"]
        module.buffers = before["buffers"]
        for name, value in before.items():
            if isinstance(value, Parameter):  # a PyTorch-style layer's self.weight
                vars(module)[name] = value
    return output_shape


@contextmanager
def restored_on_failure(modules: Iterable[Module]) -> Iterator[list[dict[str, Any]]]:
    """Put ``modules`` back as they were if the block raises: a model that cannot be built
    leaves the layers it reused (and so the models they came from) untouched. Yields what was
    saved of each, in order."""
    modules = list(modules)
    # params and buffers are dicts that build fills in place: copied, not only referenced.
    saved = [{**vars(module), "params": dict(module.params), "buffers": dict(module.buffers)} for module in modules]
    try:
        yield saved
    except BaseException:
        for module, before in zip(modules, saved):
            vars(module).clear()
            vars(module).update(before)
        raise


def _state_shapes(layer: Module) -> dict[str, tuple[Any, ...]]:
    shapes: dict[str, tuple[Any, ...]] = {name: (p.data.shape, p.data.dtype) for name, p in layer.named_parameters()}
    shapes.update((name, (b.shape, b.dtype)) for name, b in layer.named_buffers())
    return shapes
