"""Fork a joblib sweep's workers from the main process instead of starting fresh interpreters.

Hydra's joblib launcher always uses loky, whose workers are new interpreters: each one
imports MLflow, its SQLAlchemy store and matplotlib again (about 6 s of CPU here) before its
first job trains, so on two cores a sweep of short jobs was no faster in parallel than one
job after another. Forked workers start with everything the main process has imported.

What keeps forking sound:
- ``gc.freeze()`` before the fork: loky runs ``gc.collect()`` after every task, and a full
  collection over the inherited heap cost about 1 s per job (and copies every page it touches).
- ``cnnx.tracking.after_fork``: a forked process drops the database connections and MLflow's
  telemetry client it inherited (the client's threads and locks do not survive a fork).
- The main process of a sweep never trains: it has run no OpenMP region (libgomp cannot be
  used again after a fork), and OpenBLAS re-creates its threads in a forked child itself.

Linux only (macOS system libraries are not fork-safe); ``sweep.fork_workers=false`` turns it
off.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import warnings
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

#: What every job imports, beyond what the sweep's own callbacks import (the MLflow sweep
#: callback has imported MLflow and its store by now).
JOB_MODULES = ("cnnx.app",)
#: ... and what a tracked job imports for its run report.
TRACKING_MODULES = ("cnnx.tracking.mlflow_tracker", "cnnx.tracking.run_report", "cnnx.tracking.plots")

# loky warns that fork "does not respect POSIX": its workers only run jobs, which is what
# fork-based pools have always done; the warning would only confuse users.
warnings.filterwarnings("ignore", message="`fork` start method should not be used", category=UserWarning)


def joblib_launcher(config: DictConfig) -> bool:
    from cnnx.launcher_kind import launcher_kind

    return launcher_kind(config) == "joblib"


def fork_workers_wanted(config: DictConfig) -> bool:
    """``sweep.fork_workers`` resolved: null means yes on Linux with the joblib launcher."""
    if not joblib_launcher(config) or not hasattr(os, "fork"):
        return False
    setting = OmegaConf.select(config, "sweep.fork_workers", default=None)
    return sys.platform.startswith("linux") if setting is None else bool(setting)


class ForkJoblibWorkers(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not fork_workers_wanted(config):
            return
        from joblib.externals.loky.backend import context

        tracked = OmegaConf.select(config, "tracking.enabled", default=True)
        for name in JOB_MODULES + (TRACKING_MODULES if tracked else ()):
            importlib.import_module(name)
        context.set_start_method("fork", force=True)
        gc.freeze()
