"""``loss.weight=balanced``: class weights from the training split's label counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cnnx.errors import ConfigError

#: The value of a loss's ``weight`` option that asks for these weights.
BALANCED = "balanced"


def with_class_weights(options: dict[str, Any], data: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """A loss's options with ``weight: balanced`` turned into the weights (``log`` shows them),
    and a weight list checked against the dataset's classes, naming ``loss.weight``: the loss
    could only name its own option, at its first batch."""
    weight = options.get("weight")
    if isinstance(weight, str):
        if weight != BALANCED:
            raise ConfigError(f"loss.weight={weight!r} is not accepted; accepted: {BALANCED}, null, or one weight "
                              f"per class ([1.0, 3.0, ...])")
        weight = balanced_class_weights(data.train[1], data.classes, "loss.weight")
        log("loss weights (balanced): " + ", ".join(f"{name} {w:.3g}" for name, w in zip(data.classes, weight)))
    elif isinstance(weight, list) and len(weight) != data.num_classes:
        raise ConfigError(f"loss.weight has {len(weight)} entries for the {data.num_classes} classes of dataset "
                          f"{data.name!r}; accepted: one weight per class, or {BALANCED}")
    return options if weight is options.get("weight") else {**options, "weight": weight}


def balanced_class_weights(labels: np.ndarray, class_names: list[str], key: str) -> list[float]:
    """``N / (K · n_k)`` for each class k, scikit-learn's and Keras' "balanced" weights: every
    class then weighs as much in the loss as it would with K equal classes."""
    counts = np.bincount(np.asarray(labels, dtype=np.intp).reshape(-1), minlength=len(class_names))
    absent = [name for name, count in zip(class_names, counts) if count == 0]
    if absent:
        raise ConfigError(f"{key}={BALANCED}: class {', '.join(map(repr, absent))} has no training samples, so its "
                          f"weight would be infinite; give the weights as a list instead")
    return (counts.sum() / (len(counts) * counts)).tolist()
