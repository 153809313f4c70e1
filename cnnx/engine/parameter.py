import numpy as np


class Parameter:
    """A trainable array and the gradient the last ``backward`` wrote for it.

    Layers assign ``grad`` on every backward pass (no accumulation: ``zero_grad`` is never needed);
    optimizers read it and update ``data`` in place. ``grad`` is None after an optimizer's
    ``zero_grad()``, until the next backward.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        self.data = data
        self.grad: np.ndarray | None = None  # as in torch: no backward yet, nothing to step

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def size(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"
