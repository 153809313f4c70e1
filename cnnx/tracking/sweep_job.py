"""What a job of a sweep needs to know: its parent run, its BLAS share, whether it already ran
(or began to)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnx.blas_threads import threads_per_job
from cnnx.tracking.sweep_link import SweepLink, sweep_dir_of
from cnnx.tracking.sweep_resume import (
    CHECKPOINT_DIR_TAG, FINGERPRINT_TAG, config_fingerprint, finished_twin, stopped_twin, twins,
)
from cnnx.tracking.sweep_summary import ERROR_TAG, MAX_TAG_LENGTH, overrides_tag, run_objective


#: On a sweep's child: Hydra's job number (``hydra.job.num``), the trial's number in an Optuna search.
JOB_TAG = "cnnx.sweep.job"


@dataclass(frozen=True)
class SweepJob:
    link: SweepLink | None
    blas_threads: int | None
    #: Beside other jobs (any launcher but Hydra's basic one), sharing their terminal.
    parallel: bool = False
    #: Hydra's job number: which of the sweep's jobs, or Optuna's trials, this is.
    number: int | None = None
    #: Its launcher's kind (``cnnx.launcher_kind``): ``basic``, ``joblib``, ``submitit_slurm``…
    launcher: str | None = None

    @property
    def own_process_signals(self) -> bool:
        """Whether a signal this job's process gets is meant for this job alone: a submitit job's
        (SLURM's scancel, preemption or time limit), not a stop of the whole sweep."""
        from cnnx.launcher_kind import SUBMITIT_KINDS

        return self.launcher in SUBMITIT_KINDS

    @property
    def experiment_name(self) -> str | None:
        """The parent's experiment, where the job logs (None from a link that predates it)."""
        return self.link.experiment_name if self.link is not None else None

    @property
    def swept(self) -> tuple[str, ...]:
        return self.link.swept if self.link is not None else ()

    def tags(self) -> dict[str, str]:
        return {} if self.number is None else {JOB_TAG: str(self.number)}


def current_sweep_job(hydra_cfg: Any) -> SweepJob | None:
    """The sweep this Hydra job belongs to, or None for a single run."""
    from hydra.types import RunMode

    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    from cnnx.launcher_kind import kind_of_launcher

    kind = kind_of_launcher(str(hydra_cfg.launcher.get("_target_", "")))
    return SweepJob(SweepLink.read(sweep_dir_of(hydra_cfg)), threads_per_job(hydra_cfg.launcher), kind != "basic",
                    hydra_cfg.job.get("num"), kind)


@dataclass(frozen=True)
class EarlierAttempt:
    """What a resumed sweep found of this job: its objective if it FINISHED, else the checkpoints
    of the run that was stopped (None for both: the job never started, or left nothing)."""

    objective: float | None = None
    checkpoint_dir: Path | None = None


def tracker_options(job: SweepJob | None, config: dict[str, Any], checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """MlflowTracker arguments that make a job's run a child of the sweep's parent."""
    from cnnx.blas_threads import blas_threads_in_effect

    # Results depend on the BLAS thread count (summation order), so every run records it.
    swept = job.swept if job is not None else ()
    tags = {FINGERPRINT_TAG: config_fingerprint(config, swept), "cnnx.blas_threads": str(blas_threads_in_effect())}
    if checkpoint_dir is not None:
        tags[CHECKPOINT_DIR_TAG] = str(checkpoint_dir.resolve())
    if job is None or job.link is None:
        return {"tags": tags}
    return {"tags": {**tags, **job.tags()}, "tracking_uri": job.link.tracking_uri,
            "parent_run_id": job.link.parent_run_id}


def earlier_attempt(job: SweepJob | None, config: dict[str, Any], experiment_name: str,
                    job_dir: str | None = None) -> EarlierAttempt:
    """With ``sweep.resume=true``: what an earlier run of this job in the sweep left.

    Without it, a job whose own folder (``job_dir``) already holds checkpoints is the same job
    run again by its launcher while the sweep goes on: SLURM requeues a preempted job, submitit
    one that hit its time limit, Ray retries a task whose worker died. Each reruns it in the
    same folder, and it continues its earlier attempt's run there as a resumed sweep would.
    """
    if job is None or job.link is None or not config["tracking"]["enabled"]:
        return EarlierAttempt()
    rerun_in = None if config["sweep"]["resume"] else _checkpoints_of_a_rerun(config, job_dir)
    if not config["sweep"]["resume"] and rerun_in is None:
        return EarlierAttempt()
    from mlflow import MlflowClient

    client = MlflowClient(job.link.tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return EarlierAttempt()
    runs = twins(client, experiment.experiment_id, job.link.parent_run_id, config_fingerprint(config, job.swept))
    if rerun_in is not None:
        # Its own earlier attempt, by its folder: a sweep may hold jobs of one config twice
        # (Optuna drawing a trial again), each with its own run.
        runs = [run for run in runs if _wrote_to(run, rerun_in)]
    finished = finished_twin(runs)
    if finished is not None:
        monitor = config["trainer"]["monitor"]
        objective = run_objective(client, finished, monitor)
        shown = "not logged" if objective is None else f"{objective:.4f}"
        print(f"cnnx: skipping {finished.info.run_name!r}: already FINISHED as run {finished.info.run_id} "
              f"({monitor} (best epoch) = {shown})", file=sys.stderr)
        return EarlierAttempt(objective=float("nan") if objective is None else objective)
    stopped = stopped_twin(runs) if config["trainer"]["checkpoint"]["enabled"] else None
    if stopped is None:
        # Checkpoints that no unfinished attempt of this job in this sweep wrote: the job's own
        # refusal of a folder holding another run's checkpoints says what to do.
        return EarlierAttempt()
    run, directory = stopped
    if rerun_in is not None:
        print(f"cnnx: job {job.number} was started again in its folder by the launcher (a requeue or a "
              f"retry)", file=sys.stderr)
    print(f"cnnx: continuing {run.info.run_name!r} (run {run.info.run_id}, {run.info.status}) from its "
          f"checkpoints in {directory}", file=sys.stderr)
    return EarlierAttempt(checkpoint_dir=directory)


def _wrote_to(run, folder: Path) -> bool:
    written = run.data.tags.get(CHECKPOINT_DIR_TAG)
    return written is not None and Path(written).resolve() == folder.resolve()


def _checkpoints_of_a_rerun(config: dict[str, Any], job_dir: str | None) -> Path | None:
    """The job folder's own checkpoint folder when it holds checkpoints already, else None."""
    from cnnx.training.checkpoint import list_checkpoints

    settings = config["trainer"]["checkpoint"]
    if job_dir is None or not settings["enabled"] or settings.get("dir"):
        return None
    folder = Path(job_dir) / "checkpoints"
    return folder if list_checkpoints(folder) else None


@dataclass
class JobProgress:
    training: bool = False


@contextlib.contextmanager
def failure_recorded(job: SweepJob | None, overrides: list[str], tracked: bool) -> Iterator[JobProgress]:
    """Records a sweep job that fails before training (a value refused, a model that does not
    build) as a FAILED child of the sweep's parent, with its overrides and its error: it has no
    run of its own yet, and the parent would otherwise show no trace of it. Set ``training``
    once the trainer starts, from where the job's own run records what happens."""
    progress = JobProgress()
    try:
        yield progress
    except Exception as error:
        if not progress.training and tracked and job is not None and job.link is not None:
            _record_failed_job(job, overrides, error)
        raise


def _record_failed_job(job: SweepJob, overrides: list[str], error: Exception) -> None:
    from mlflow import MlflowClient

    from cnnx.app import short_overrides
    from cnnx.cli import one_line
    from cnnx.tracking.mlflow_tracker import end_run

    link = job.link
    message = one_line(error) or f"{type(error).__name__}: {error}"
    name = ",".join(short_overrides(overrides, swept=job.swept)) or "job"
    try:
        client = MlflowClient(link.tracking_uri)
        run = client.create_run(link.experiment_id, run_name=name, tags={
            "mlflow.parentRunId": link.parent_run_id, **job.tags(), **overrides_tag(overrides),
            ERROR_TAG: message[:MAX_TAG_LENGTH]})
        end_run(client, run.info.run_id, "FAILED")
    except Exception:  # noqa: BLE001 — the job's own error is what its user must see
        pass
