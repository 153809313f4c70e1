"""Inference without gradients: ``with no_grad(): ...``, as ``torch.no_grad()``.

Layers keep what their ``backward`` needs (inputs, masks, column buffers) on every forward.
An inference pass in the middle of a training step — evaluating a validation batch between
``forward`` and ``backward`` — would otherwise replace those caches, and the step's gradients
would silently be those of the validation batch. Under ``no_grad`` a ``Model`` leaves every
layer's caches as they were, and layers may skip work that only backward needs (max pooling's
gradient route). The flag is per thread, as PyTorch's is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
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
