"""Which SLURM jobs a stopping sweep cancels: those its own process submitted (the cancelling
itself runs against a fake SLURM in tests/test_slurm_end_to_end.py)."""

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf
from submitit.core.core import Executor

import cnnx.slurm_jobs
from cnnx.slurm_jobs import SlurmJobsStopWithTheSweep


class ArrayOfTwo(Executor):
    """An executor submitting nothing: its jobs are a SLURM array's two tasks."""

    cluster = "slurm"  # as submitit's AutoExecutor says it

    def __init__(self, array_id):
        self.array_id = array_id


    def _internal_process_submissions(self, delayed_submissions):
        return [SimpleNamespace(job_id=f"{self.array_id}_{n}") for n, _ in enumerate(delayed_submissions)]


class LocalJobs(ArrayOfTwo):
    """submitit_local's: its job ids are process ids."""

    cluster = "local"


@pytest.fixture
def submitted(monkeypatch):
    monkeypatch.setattr(Executor, "map_array", Executor.map_array)  # undone after the test
    monkeypatch.setattr(cnnx.slurm_jobs, "_submitted", [])
    return cnnx.slurm_jobs._submitted


def launcher(kind):
    return OmegaConf.create({"hydra": {"launcher": {
        "_target_": f"hydra_plugins.hydra_submitit_launcher.submitit_launcher.{kind}"}}})


def test_a_slurm_sweep_records_the_arrays_it_submits_and_names_them(submitted, capsys):
    SlurmJobsStopWithTheSweep().on_multirun_start(launcher("SlurmLauncher"))
    SlurmJobsStopWithTheSweep().on_multirun_start(launcher("SlurmLauncher"))  # wrapped once
    assert [job.job_id for job in ArrayOfTwo("1000").map_array(abs, [1, -2])] == ["1000_0", "1000_1"]
    ArrayOfTwo("1003").map_array(abs, [3])
    assert submitted == ["1000", "1003"]
    assert capsys.readouterr().err.splitlines() == [
        "cnnx: submitted SLURM job 1000 (2 tasks)", "cnnx: submitted SLURM job 1003 (1 task)"]


def test_another_launchers_sweep_records_nothing(submitted):
    SlurmJobsStopWithTheSweep().on_multirun_start(launcher("LocalLauncher"))
    ArrayOfTwo("1000").map_array(abs, [1, -2])
    assert submitted == []


def test_each_sweep_records_its_own_slurm_arrays_only(submitted):
    SlurmJobsStopWithTheSweep().on_multirun_start(launcher("SlurmLauncher"))
    ArrayOfTwo("1000").map_array(abs, [1, -2])
    LocalJobs("19748").map_array(abs, [1])  # a local job in the same process: no SLURM job
    assert submitted == ["1000"]
    SlurmJobsStopWithTheSweep().on_multirun_start(launcher("LocalLauncher"))  # the next sweep
    LocalJobs("19750").map_array(abs, [1])
    assert submitted == []
