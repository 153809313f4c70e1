"""Resumable sweeps: a job whose config already FINISHED under the sweep's parent is not run again.

Every run carries a fingerprint of the parts of its config that decide its result; where it is
logged, how it is named and whether the sweep resumes do not count.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

FINGERPRINT_TAG = "cnnx.config_fingerprint"
_NOT_PART_OF_THE_RESULT = ("tracking", "sweep")


def config_fingerprint(config: Mapping[str, Any]) -> str:
    kept = {k: v for k, v in config.items() if k not in _NOT_PART_OF_THE_RESULT}
    trainer = dict(kept.get("trainer") or {})
    trainer.pop("progress", None)
    kept["trainer"] = trainer
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def finished_twin(client, experiment_id: str, parent_run_id: str, fingerprint: str):
    """The FINISHED child of ``parent_run_id`` with this config fingerprint, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`mlflow.parentRunId` = '{parent_run_id}' and "
                       f"tags.`{FINGERPRINT_TAG}` = '{fingerprint}' and attributes.status = 'FINISHED'"),
        max_results=1,
    )
    return runs[0] if runs else None
