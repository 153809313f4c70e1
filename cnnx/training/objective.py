"""What a run is judged by: the best epoch's ``trainer.monitor``.

Sweepers optimise it, a sweep's summary ranks its children by it, and every run logs it per
epoch as ``best_<monitor>`` (the best so far), so that the MLflow UI, which compares runs by
a metric's last value, ranks them as the sweep does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def objective_mode(key: str) -> str:
    """Accuracies are maximised, everything else (losses) minimised."""
    return "max" if key.endswith("acc") else "min"


def train_twin(monitor: str) -> str:
    """What a run without a validation split judges by instead of ``monitor``: ``train_acc``
    for ``val_acc`` (``monitor`` itself when it is no validation figure)."""
    return monitor.replace("val_", "train_")


def objective_key(epochs: Sequence[dict[str, float]], monitor: str) -> str:
    """``monitor``, or its train twin when the run has no validation split."""
    if epochs and monitor not in epochs[-1]:
        return train_twin(monitor)
    return monitor


def running_best(epochs: Sequence[dict[str, float]], monitor: str) -> list[dict[str, float]]:
    """For each epoch, ``{"best_<key>": the best value of key up to it}`` (empty before the
    key has a value), with ``key`` as ``objective_key`` picks it. NaN is no value: a NaN
    first would stay the best forever (``max(nan, x)`` is nan)."""
    key = objective_key(epochs, monitor)
    pick = max if objective_mode(key) == "max" else min
    best, rows = None, []
    for epoch in epochs:
        value = epoch.get(key)
        if value is not None and not math.isnan(value):
            best = value if best is None else pick(best, value)
        rows.append({} if best is None else {f"best_{key}": float(best)})
    return rows
