"""How a sweep's own process takes SIGTERM and SIGHUP, and how it names a killed worker.

The end-to-end tests (test_sweeps_end_to_end.py) send the signals to real sweeps; these pin
down the handlers' hand-over without a subprocess each.
"""

from __future__ import annotations

import os
import signal

import pytest

from cnnx.cli import killed_worker
from cnnx.sweep_signals import SweepSignals
from cnnx.training.signals import InterruptFlag, StoppedBySignal


@pytest.fixture
def sweep_signals():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    handlers = SweepSignals()
    yield handlers
    handlers.restore()
    assert {signum: signal.getsignal(signum) for signum in before} == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_the_first_signal_stops_the_sweep_and_repeats_do_not_cut_that_short(sweep_signals, signum):
    with pytest.raises(StoppedBySignal) as stopped:
        os.kill(os.getpid(), signum)
    assert stopped.value.signal_name == sweep_signals.signal_name == signal.Signals(signum).name
    os.kill(os.getpid(), signal.SIGTERM)  # `timeout` sends its signal twice
    os.kill(os.getpid(), signal.SIGHUP)


def test_once_the_sweep_stops_for_ctrl_c_a_later_sigterm_cannot_kill_it_before_it_closes(sweep_signals):
    sweep_signals.stopping()
    os.kill(os.getpid(), signal.SIGTERM)
    assert sweep_signals.signal_name is None  # what stopped it (Ctrl-C) still decides the exit code


def test_a_trainer_in_the_sweeps_process_takes_the_signals_over_and_hands_them_back(sweep_signals):
    ours = signal.getsignal(signal.SIGTERM)
    with InterruptFlag() as flag:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)  # a repeat is not a second Ctrl-C
        assert flag.signal_name == "SIGHUP" and sweep_signals.signal_name is None
        with pytest.raises(KeyboardInterrupt):  # ... but Ctrl-C still stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == ours and signal.getsignal(signal.SIGHUP) == ours


class TerminatedWorkerError(Exception):
    """Named as joblib's: the CLI matches it by name, without importing joblib."""


@pytest.mark.parametrize("codes, said, code", [
    ("{SIGKILL(-9)}", "a worker process of the sweep was killed by SIGKILL (out of memory?)", 137),
    ("{SIGSEGV(-11), SIGKILL(-9)}", "a worker process of the sweep was killed by SIGSEGV", 139),
    ("{EXIT(3)}", "a worker process of the sweep exited unexpectedly with code 3", 1),
    ("{}", "a worker process of the sweep ended unexpectedly", 1),
])
def test_a_killed_worker_is_named_with_its_signal(codes, said, code):
    error = TerminatedWorkerError("A worker process managed by the executor was unexpectedly terminated. This "
                                  f"could be caused by ... \nThe exit codes of the workers are {codes}")
    assert killed_worker(error) == (said, code)
    assert killed_worker(RuntimeError("The exit codes of the workers are {SIGKILL(-9)}")) is None


class RayError(Exception):
    """Named as Ray's (Ray is not a test dependency), as are the errors below."""


class WorkerCrashedError(RayError):
    pass


class OutOfMemoryError(RayError):
    pass


class NodeDiedError(RayError):
    pass


def test_a_job_ended_by_slurm_or_ray_is_one_line_naming_what_ended_it(tmp_path):
    from submitit.core.utils import FailedJobError, UncompletedJobError

    result = tmp_path / ".submitit" / "1000_1" / "1000_1_0_result.pkl"
    cancelled = UncompletedJobError(f"Job 1000_1 (task: 0) with path {result}\nhas not produced any output "
                                    "(state: CANCELLED by 0)\nError stream produced:\n----\nTraceback ...")
    assert killed_worker(cancelled) == (
        "job 1000_1 of the sweep ended without a result (state: CANCELLED by 0: cancelled, killed, out of "
        f"memory?); its logs are in {result.parent}", 1)
    timed_out = UncompletedJobError("Job not requeued because: timed-out too many times.")
    assert "time limit (hydra.launcher.timeout_min)" in killed_worker(timed_out)[0]
    # ... named by the job that raised it (cnnx.training.signals.hand_over), as a 100-task array needs
    named = UncompletedJobError(f"Job not requeued because: timed-out too many times. (job 1000_3; its logs are "
                                f"in {result.parent})")
    assert killed_worker(named) == (
        "job 1000_3 of the sweep reached its time limit (hydra.launcher.timeout_min) more often than submitit "
        f"requeues it (hydra.launcher.max_num_timeout); its logs are in {result.parent}", 1)
    assert killed_worker(WorkerCrashedError("The worker died unexpectedly while executing this task.")) == (
        "a Ray worker process of the sweep died while it ran a job (out of memory? killed?)", 1)
    assert killed_worker(OutOfMemoryError("Task was killed due to the node running low on memory.")) == (
        "Ray's memory monitor killed a job of the sweep: its node ran out of memory", 1)
    assert killed_worker(NodeDiedError("The node with node id: 1a2b has been marked dead")) == (
        "the Ray node that ran a job of the sweep died", 1)
    # A job's own MemoryError-like exception of the same name is the job's failure, not Ray's:
    assert killed_worker(type("OutOfMemoryError", (Exception,), {})("a plugin's own")) is None
    # A job's own failure reaches the sweep as its exception, not as a lost job:
    assert killed_worker(FailedJobError("Job (task=0) failed during processing with trace: ...")) is None


def test_a_submission_slurm_refused_is_one_line_with_sbatchs_reason():
    from submitit.core.utils import FailedJobError

    from cnnx.cli import refused_submission

    error = FailedJobError("sbatch: error: invalid partition specified: cpux\n"
                           "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert refused_submission(error) == (
        "SLURM refused the sweep's jobs: sbatch: error: invalid partition specified: cpux; sbatch: error: Batch "
        "job submission failed: Invalid partition name specified; check the hydra.launcher settings it names")
    assert refused_submission(FailedJobError("Job (task=0) failed during processing")) is None
    assert refused_submission(RuntimeError("sbatch: error: x")) is None
