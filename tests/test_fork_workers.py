"""Joblib sweep workers are forked with the job's imports done (cnnx.fork_workers).

The end-to-end joblib sweeps (tests/test_sweeps_end_to_end.py) run through forked workers
with a sqlite store, and through loky's fresh interpreters (``sweep.fork_workers=false``)
with a tracking server; these tests pin down when forking is chosen and what it sets up.
"""

from __future__ import annotations

import gc
import sys

import pytest
from hydra import compose, initialize_config_module
from joblib.externals.loky.backend import context

from cnnx.config_schema import register as register_schema
from cnnx.fork_workers import JOB_MODULES, TRACKING_MODULES, ForkJoblibWorkers, fork_workers_wanted


def sweep_config(*overrides: str):
    register_schema()
    with initialize_config_module("cnnx.conf", version_base="1.3"):
        return compose("config", overrides=["+experiment=digits_small", *overrides], return_hydra_config=True)


@pytest.fixture
def restore_loky_and_gc():
    method = context.get_start_method()
    yield
    context.set_start_method(method, force=True)
    gc.unfreeze()


@pytest.mark.parametrize(("overrides", "expected"), [
    (["hydra/launcher=joblib"], sys.platform.startswith("linux")),
    (["hydra/launcher=joblib", "sweep.fork_workers=true"], True),
    (["hydra/launcher=joblib", "sweep.fork_workers=false"], False),
    ([], False),  # the basic launcher runs jobs in the main process
    (["hydra/launcher=submitit_local", "sweep.fork_workers=true"], False),  # submitit starts its own
])
def test_forking_is_chosen_only_for_the_joblib_launcher(overrides, expected):
    assert fork_workers_wanted(sweep_config(*overrides)) is expected


def test_a_joblib_multirun_start_forks_workers_with_imports_done_and_the_heap_frozen(restore_loky_and_gc):
    gc.unfreeze()
    ForkJoblibWorkers().on_multirun_start(sweep_config("hydra/launcher=joblib", "sweep.fork_workers=true"))
    assert context.get_start_method() == "fork"
    assert all(name in sys.modules for name in JOB_MODULES + TRACKING_MODULES)
    assert gc.get_freeze_count() > 0


def test_other_launchers_leave_loky_alone(restore_loky_and_gc):
    ForkJoblibWorkers().on_multirun_start(sweep_config("hydra/launcher=joblib", "sweep.fork_workers=false"))
    ForkJoblibWorkers().on_multirun_start(sweep_config())
    assert context.get_start_method() != "fork"
