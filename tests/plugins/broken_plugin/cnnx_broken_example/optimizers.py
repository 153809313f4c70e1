"""Optimizers with the slips plugin authors make: each fails at its first step."""

from cnnx.engine.optim.optimizer import Optimizer


class OldUpdateSignature(Optimizer):
    """``_update`` without the scratch argument the base class passes."""

    def _update(self, data, grad, state, lr):
        data -= lr * grad


class SlotsAsTuple(Optimizer):
    """``slots`` is a method the base class calls; a tuple attribute cannot be called."""

    slots = ("m",)

    def _update(self, data, grad, state, scratch, lr):
        data -= lr * grad
