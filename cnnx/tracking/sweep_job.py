"""What a job of a sweep needs to know: its parent run, its BLAS share, whether it already ran."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from cnnx.blas_threads import threads_per_job
from cnnx.tracking.sweep_link import SweepLink, sweep_dir_of
from cnnx.tracking.sweep_resume import FINGERPRINT_TAG, config_fingerprint, finished_twin
from cnnx.tracking.sweep_summary import run_objective


@dataclass(frozen=True)
class SweepJob:
    link: SweepLink | None
    blas_threads: int | None


def current_sweep_job(hydra_cfg: Any) -> SweepJob | None:
    """The sweep this Hydra job belongs to, or None for a single run."""
    from hydra.types import RunMode

    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return SweepJob(SweepLink.read(sweep_dir_of(hydra_cfg)), threads_per_job(hydra_cfg.launcher))


def tracker_options(job: SweepJob | None, config: dict[str, Any]) -> dict[str, Any]:
    """MlflowTracker arguments that make a job's run a child of the sweep's parent."""
    from cnnx.blas_threads import blas_threads_in_effect

    # Results depend on the BLAS thread count (summation order), so every run records it.
    tags = {FINGERPRINT_TAG: config_fingerprint(config), "cnnx.blas_threads": str(blas_threads_in_effect())}
    if job is None or job.link is None:
        return {"tags": tags}
    return {"tags": tags, "tracking_uri": job.link.tracking_uri, "parent_run_id": job.link.parent_run_id}


def already_finished(job: SweepJob | None, config: dict[str, Any], experiment_name: str) -> float | None:
    """With ``sweep.resume=true``: the objective of this config's FINISHED run in the sweep, if any."""
    if job is None or job.link is None or not config["sweep"]["resume"] or not config["tracking"]["enabled"]:
        return None
    from mlflow import MlflowClient

    client = MlflowClient(job.link.tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    twin = finished_twin(client, experiment.experiment_id, job.link.parent_run_id, config_fingerprint(config))
    if twin is None:
        return None
    monitor = config["trainer"]["monitor"]
    objective = run_objective(client, twin, monitor)
    print(f"cnnx: skipping {twin.info.run_name!r}: already FINISHED as run {twin.info.run_id} "
          f"({monitor} (best epoch) = {objective})", file=sys.stderr)
    return float("nan") if objective is None else objective
