"""When a layer built with ``inplace=True`` may really overwrite its input.

Overwriting saves an array per step, and it is exact only if nothing else still reads that
memory. PyTorch raises at ``backward`` when an in-place operation clobbered a tensor saved for
the gradient; here a container decides once, at build time, walking its layers in run order,
and an in-place layer whose input must stay intact computes out of place instead — same
values, one more array. Its input must stay intact when it is:

- the container's own input: the caller's batch (often a view of a dataset), or a residual
  block's input, which the shortcut adds after the body has run;
- an output whose producer reads it in ``backward`` (tanh, sigmoid and softmax read the
  values; ReLU and leaky ReLU only the signs, which ReLU, dropout and a leaky ReLU with a
  non-negative slope keep);
- the same memory as one of those, passed on by a layer that returns its input (flatten's
  view, dropout in evaluation) or that overwrote it.

Layers declare what they need through ``backward_reads_output``, ``returns_input_memory`` and
``preserves_sign`` (see ``cnnx.engine.module.Module``); a plugin layer that declares nothing
is assumed to read its output's values, so nothing overwrites it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import Any


class OutputUse(IntEnum):
    """How much of its own output a layer's backward reads."""

    NONE = 0
    SIGN = 1  # which entries are positive
    VALUE = 2


def guard_in_place(run_order: Iterable[Any]) -> None:
    """Set ``overwrites_input`` on every layer built with ``inplace=True`` in ``run_order``."""
    kept = OutputUse.VALUE  # the container's input
    for layer in run_order:
        if getattr(layer, "inplace", False) is True:
            layer.overwrites_input = kept == OutputUse.NONE or (
                kept == OutputUse.SIGN and getattr(layer, "preserves_sign", False))
        own = OutputUse(getattr(layer, "backward_reads_output", OutputUse.VALUE))
        aliases_input = getattr(layer, "returns_input_memory", False) or getattr(layer, "overwrites_input", False)
        kept = max(kept, own) if aliases_input else own
