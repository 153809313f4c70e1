"""Resumable sweeps: a job whose config already FINISHED under the sweep's parent is not run
again, and one that was stopped (Ctrl-C, SIGTERM, a killed worker, a preempted SLURM job)
continues its own MLflow run from its last checkpoint instead of starting over.

Every run carries a fingerprint of the parts of its config that decide its result; where it is
logged, how it is named and whether the sweep resumes do not count. A run with checkpoints
also records where they are, so a rerun of the sweep, in another sweep directory, finds them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from cnnx.inert_settings import trainer_without_inert
from cnnx.settings_added_later import without_earlier_defaults
from cnnx.tracking.sweep_summary import ROLE_TAG
from cnnx.training.checkpoint import list_checkpoints

FINGERPRINT_TAG = "cnnx.config_fingerprint"
CHECKPOINT_DIR_TAG = "cnnx.checkpoint_dir"
SIGNATURE_TAG = "cnnx.sweep.signature"
_NOT_PART_OF_THE_RESULT = ("tracking", "sweep")


def config_fingerprint(config: Mapping[str, Any], swept: Collection[str] = ()) -> str:
    # Settings added to cnnx since, at the value that trains as before, are left out: jobs
    # logged by an earlier cnnx keep their fingerprint.
    kept = {k: v for k, v in without_earlier_defaults(config).items() if k not in _NOT_PART_OF_THE_RESULT}
    trainer = trainer_without_inert(kept.get("trainer") or {}, swept)
    trainer.pop("progress", None)
    # How a run was started does not change what it computes (resuming is exact); False, the
    # default, keeps the fingerprints of runs logged before this normalisation.
    if "resume" in trainer:
        trainer["resume"] = False
    kept["trainer"] = trainer
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def twins(client, experiment_id: str, parent_run_id: str, fingerprint: str) -> list:
    """The children of ``parent_run_id`` with this config fingerprint, newest first."""
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`{FINGERPRINT_TAG}` = '{fingerprint}'",
        max_results=100, order_by=["attributes.start_time DESC"],
    )


def finished_twin(runs: list):
    """The FINISHED one of ``twins``, or None."""
    return next((run for run in runs if run.info.status == "FINISHED"), None)


def stopped_twin(runs: list) -> tuple[Any, Path] | None:
    """The newest of ``twins`` that did not finish and left checkpoints, with their directory.

    RUNNING counts as stopped: a run whose process was killed outright (``kill -9``, the OOM
    killer, a preempted node) never gets to end it.
    """
    for run in runs:
        directory = run.data.tags.get(CHECKPOINT_DIR_TAG)
        if run.info.status != "FINISHED" and directory and list_checkpoints(Path(directory)):
            return run, Path(directory)
    return None


def earlier_parent(client, experiment_id: str, signature: str):
    """The newest parent run of the sweep with this signature (``sweep_callback.sweep_signature``)
    in the experiment, or None."""
    runs = client.search_runs(
        [experiment_id], f"tags.`{SIGNATURE_TAG}` = '{signature}' and tags.`{ROLE_TAG}` = 'parent'",
        max_results=1, order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None
