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

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

#: Where submitit keeps this sweep's jobs (one folder per job, named by its SLURM job id).
_jobs_folder: Path | None = None

_JOB_ID = re.compile(r"(\d+)(?:_\d+)?")


class SlurmJobsStopWithTheSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _jobs_folder
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
        if "hydra_submitit_launcher" not in target or not target.endswith("SlurmLauncher"):
            return
        folder = str(OmegaConf.select(config, "hydra.launcher.submitit_folder"))
        # "%j" names each job's own folder; the folder above holds them all.
        _jobs_folder = Path(folder.split("%j")[0]) if "%j" in folder else None


def submitted_job_ids(folder: Path) -> list[str]:
    """The SLURM job ids (an array's one id for all its tasks) of the jobs submitit made in ``folder``."""
    try:
        names = [entry.name for entry in folder.iterdir() if entry.is_dir()]
    except OSError:
        return []
    return sorted({match.group(1) for name in names if (match := _JOB_ID.fullmatch(name))}, key=int)


def cancel_slurm_jobs(wait: float = 90.0) -> None:
    """Cancel the stopping sweep's SLURM jobs and wait (up to ``wait`` seconds) until they have left
    the queue; nothing for a sweep on another launcher."""
    if _jobs_folder is None or shutil.which("scancel") is None:
        return
    ids = submitted_job_ids(_jobs_folder)
    if not ids:
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
    """Whether a task of the jobs is still pending or running (squeue lists it)."""
    try:
        listed = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and bool(listed.stdout.strip())
