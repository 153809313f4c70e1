"""Params and tags sent in batches MLflow accepts: a run's flattened config holds more than the
100 params one ``log_batch`` may carry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: MLflow's limit of params (and tags) in one ``log_batch``.
MAX_PARAMS_PER_BATCH = 100


def log_params(client: Any, run_id: str, params: Sequence[Any], tags: Sequence[Any] = ()) -> None:
    """``params`` and ``tags`` (MLflow ``Param``/``RunTag``), as many calls as the limit needs."""
    for i in range(0, max(len(params), len(tags)), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=list(params[i:i + MAX_PARAMS_PER_BATCH]),
                         tags=list(tags[i:i + MAX_PARAMS_PER_BATCH]))
