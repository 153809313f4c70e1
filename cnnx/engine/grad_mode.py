"""Inference without gradients: ``with no_grad(): ...``, as ``torch.no_grad()``.

Layers keep what their ``backward`` needs (inputs, masks, column buffers) on every forward.
An inference pass in the middle of a training step — evaluating a validation batch between
``forward`` and ``backward`` — would otherwise replace those caches, and the step's gradients
would silently be those of the validation batch. Under ``no_grad`` a forward leaves every
layer's caches as they were, in two halves: the attributes a layer caches in are restored
afterwards (``attributes_kept``, which a ``Model`` and a layer called on its own apply), and a
``Workspace`` hands out buffers apart from the training ones, so the arrays those attributes
point to are not overwritten either. Layers may skip work that only backward needs (max
pooling's gradient route). The flag is per thread, as PyTorch's is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


@contextmanager
def no_grad() -> Iterator[None]:
    previous = is_grad_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = previous


@contextmanager
def attributes_kept(modules: Iterable[object]) -> Iterator[None]:
    """Restore every attribute of ``modules`` on exit, plugin layers that know nothing of
    no_grad included."""
    kept = [(vars(module), dict(vars(module))) for module in modules]
    try:
        yield
    finally:
        for attributes, before in kept:
            attributes.update(before)
