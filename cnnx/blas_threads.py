"""BLAS threads per run (``trainer.blas_threads``) and per sweep job, so that jobs running
side by side do not oversubscribe the CPU.

Two joblib workers on two cores, each running a two-thread BLAS, spend their time switching
threads; one thread each runs both at full speed. The share comes from the launcher's own
config: joblib's ``n_jobs``, submitit's ``cpus_per_task``, Ray's ``num_cpus``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def threads_per_job(launcher: Mapping[str, Any], cpu_count: int | None = None) -> int | None:
    """BLAS threads for one job under ``launcher`` (hydra.launcher), or None to leave BLAS alone."""
    from cnnx.launcher_kind import SUBMITIT_KINDS, kind_of_launcher

    cpus = cpu_count or os.cpu_count() or 1
    kind = kind_of_launcher(str(launcher.get("_target_", "")))
    if kind == "joblib":
        n_jobs = launcher.get("n_jobs") or -1
        workers = n_jobs if n_jobs > 0 else max(1, cpus + 1 + n_jobs)  # joblib: -1 = all cores
        return max(1, cpus // workers)
    if kind in SUBMITIT_KINDS:
        # Every local job starts at once, and SLURM gives a task cpus_per_task cores (1 unless set).
        return int(launcher.get("cpus_per_task") or 1)
    if kind == "ray":
        remote = (launcher.get("ray") or {}).get("remote") or {}
        return int(remote.get("num_cpus") or 1)
    return None


def run_blas_threads(configured: Any, sweep_share: int | None) -> int | None:
    """The BLAS threads for one run: ``trainer.blas_threads``, capped by a sweep job's share."""
    from cnnx.errors import ConfigError

    if configured is not None and (isinstance(configured, bool) or not isinstance(configured, int) or configured < 1):
        raise ConfigError(
            f"trainer.blas_threads={configured!r} is invalid; accepted: a positive integer, or null "
            "for the BLAS library's default"
        )
    if configured is None or sweep_share is None:
        return configured if configured is not None else sweep_share
    return min(configured, sweep_share)


def limit_blas_threads(threads: int | None):
    """A context limiting BLAS to ``threads`` threads (None: no limit)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return nullcontext() if threads is None else threadpool_limits(limits=threads, user_api="blas")


def blas_threads_in_effect() -> int | None:
    from threadpoolctl import threadpool_info

    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else None
