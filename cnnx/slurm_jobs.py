"""A SLURM sweep's jobs stop with the sweep (``hydra/launcher=submitit_slurm``).

SLURM runs the jobs on other machines, so a signal that stops the sweep's own process (a
closed login session, ``timeout``, Ctrl-C) never reaches them, and nothing of submitit's
cancels them: queued jobs would start later and report to a parent run already marked
FAILED, and the resume command the sweep prints would train them a second time. So a sweep
that stops cancels its SLURM jobs (``scancel``): a job that is training gets SIGTERM,
finishes its batch, saves a checkpoint and marks its run KILLED, and the sweep waits for that
before it exits, so that its resume finds every checkpoint written.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: The SLURM job ids (an array's one id for all its tasks) this process has submitted.
_submitted: list[str] = []


class SlurmJobsStopWithTheSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from cnnx.launcher_kind import launcher_kind

        _submitted.clear()  # a sweep's own jobs only, also when a process runs several
        if launcher_kind(config) == "submitit_slurm":
            record_submissions()


def record_submissions() -> None:
    """Have submitit's executors note the ids of the jobs they submit from this process: only
    those are this sweep's (a shared ``submitit_folder`` holds other sweeps' jobs too)."""
    from submitit.core.core import Executor

    if getattr(Executor.map_array, "records_job_ids", False):
        return
    submit_array = Executor.map_array

    def map_array(self, fn, *iterable):
        jobs = submit_array(self, fn, *iterable)
        # SLURM's only: a local executor's job ids are process ids, no business of scancel's
        if getattr(self, "cluster", None) == "slurm" or type(self).__name__ == "SlurmExecutor":
            for job in jobs:
                array_id = str(job.job_id).split("_")[0]
                if array_id not in _submitted:
                    _submitted.append(array_id)
                    tasks = sum(str(other.job_id).split("_")[0] == array_id for other in jobs)
                    # What squeue, sacct and scancel know the sweep's jobs by.
                    print(f"cnnx: submitted SLURM job {array_id} ({tasks} task{'s' if tasks > 1 else ''})",
                          file=sys.stderr)
        return jobs

    map_array.records_job_ids = True
    map_array.__doc__ = submit_array.__doc__
    Executor.map_array = map_array


def cancel_slurm_jobs(wait: float = 90.0) -> None:
    """Cancel the SLURM jobs this sweep submitted and wait (up to ``wait`` seconds) until they
    have left the queue; nothing for a sweep on another launcher."""
    ids = list(_submitted)
    if not ids:
        return
    if shutil.which("scancel") is None:
        print(f"cnnx: warning: no scancel on PATH; cancel the sweep's SLURM jobs yourself: scancel {' '.join(ids)}",
              file=sys.stderr)
        return
    print(f"cnnx: cancelling the sweep's SLURM job{'s' if len(ids) > 1 else ''} {', '.join(ids)} (scancel); "
          f"jobs in training save a checkpoint first", file=sys.stderr)
    try:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        print(f"cnnx: warning: scancel failed; cancel the jobs yourself: scancel {' '.join(ids)}", file=sys.stderr)
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _queued(ids):
        time.sleep(1.0)


def _queued(ids: list[str]) -> bool:
    """Whether a task of the jobs is still pending, running or completing (squeue lists it)."""
    try:
        listed = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and bool(listed.stdout.strip())
