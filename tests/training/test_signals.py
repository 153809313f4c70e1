"""Signals during training, in-process: SIGINT, SIGTERM and a second Ctrl-C stop the run where
it is safe and say what resumes it."""

from __future__ import annotations

import pytest
from tiny_trainer import make_trainer, tiny_data

from cnnx.training.checkpoint import Checkpoint


def test_sigterm_only_raises_the_flag_and_handlers_are_restored():
    import os
    import signal

    from cnnx.training.signals import InterruptFlag

    before = signal.getsignal(signal.SIGTERM)
    with InterruptFlag() as flag:
        assert not flag.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and flag.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_while_the_run_finishes_lets_it_finish():
    """SIGTERM during the test evaluation or the end-of-run report used to hit the default
    handler: the process died silently halfway through logging and the MLflow run stayed
    RUNNING. Now it is deferred until the run has finished."""
    import os
    import signal

    from cnnx.training.callbacks import Callback

    class SignalAtEnd(Callback):
        def on_fit_end(self, trainer, test_metrics):
            os.kill(os.getpid(), signal.SIGTERM)

    class LaterCallback(Callback):
        ended = False

        def on_fit_end(self, trainer, test_metrics):
            self.ended = True

    reached_default = []
    previous = signal.signal(signal.SIGTERM, lambda *_: reached_default.append(True))
    later, lines = LaterCallback(), []
    try:
        trainer = make_trainer(epochs=1, callbacks=[SignalAtEnd(), later])
        trainer.log = lines.append
        trainer.fit(tiny_data())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not reached_default and later.ended
    assert lines == ["SIGTERM received while the run was finishing; it finished first (nothing to resume)"]


@pytest.mark.slow  # creating a sqlite MLflow store takes seconds
def test_a_signal_between_epochs_is_tagged_as_the_console_says_it(tmp_path, monkeypatch):
    """A SIGINT at an epoch boundary printed 'after epoch 1', but the run's error tag said
    'stopped after epoch 1, batch 0'."""
    import os
    import signal

    from mlflow import MlflowClient

    from cnnx.cli import interrupted_message
    from cnnx.tracking.mlflow_tracker import MlflowTracker
    from cnnx.training.callbacks import Callback
    from cnnx.training.signals import TrainingInterrupted

    class SignalAfterEpoch1(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.chdir(tmp_path)  # the store's artifacts go to ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(experiment_name="e", config={"seed": 0}, config_yaml="seed: 0\n", tracking_uri=uri,
                            log_kernels=False, log_weights=False, log_plots=False, log_model=False,
                            spill_dir=tmp_path / "unsent")
    trainer = make_trainer(epochs=3, callbacks=[Checkpoint(tmp_path / "ck"), tracker, SignalAfterEpoch1()])
    with pytest.raises(TrainingInterrupted) as caught:
        trainer.fit(tiny_data())
    console = interrupted_message(caught.value, [])
    assert console.startswith("interrupted by SIGINT after epoch 1; checkpoint saved to "), console
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "TrainingInterrupted: SIGINT received; stopped after epoch 1"


def test_a_second_ctrl_c_still_points_at_the_newest_checkpoint(tmp_path):
    """A second Ctrl-C stops mid-batch; the CLI said only 'no checkpoint written for this
    moment', although the previous epoch's checkpoint resumes the run."""
    from cnnx.cli import stopped_at_once_message
    from cnnx.training.callbacks import Callback

    class SecondCtrlC(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 2:
                raise KeyboardInterrupt

    trainer = make_trainer(epochs=3, callbacks=[Checkpoint(tmp_path), SecondCtrlC()])
    with pytest.raises(KeyboardInterrupt) as caught:
        trainer.fit(tiny_data())
    caught.value.run_dir = "runs/x"
    message = stopped_at_once_message(caught.value, ["+experiment=lenet"])
    assert message == (f"interrupted; no checkpoint written for this moment, but the newest one, "
                       f"{tmp_path / 'epoch-0002.npz'}, resumes with: python -m cnnx +experiment=lenet "
                       f"trainer.resume=true hydra.run.dir=runs/x")
    assert stopped_at_once_message(KeyboardInterrupt(), []) == "interrupted; no checkpoint written for this moment"


def test_a_second_ctrl_c_while_the_first_one_winds_down_points_at_the_checkpoint_it_wrote(tmp_path):
    """The first Ctrl-C's checkpoint was written, the second came while the run was being
    marked KILLED: the CLI said "no checkpoint written for this moment" and gave no resume
    command, though that checkpoint resumes the run exactly."""
    import os
    import signal

    from cnnx.cli import stopped_at_once_message
    from cnnx.training.callbacks import Callback

    class CtrlCTwice(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)

        def on_fit_error(self, trainer, error):
            raise KeyboardInterrupt  # the second Ctrl-C, as the tracker marks the run KILLED

    trainer = make_trainer(epochs=3, callbacks=[Checkpoint(tmp_path), CtrlCTwice()])
    with pytest.raises(KeyboardInterrupt) as caught:
        trainer.fit(tiny_data())
    caught.value.run_dir = "runs/x"
    assert stopped_at_once_message(caught.value, ["+experiment=lenet"]) == (
        f"interrupted; no checkpoint written for this moment, but the newest one, {tmp_path / 'epoch-0001.npz'}, "
        f"resumes with: python -m cnnx +experiment=lenet trainer.resume=true hydra.run.dir=runs/x")


def test_a_signal_once_the_run_has_finished_is_only_noted_and_before_it_acts_as_usual():
    """Just after a CLI run finished, a Ctrl-C gave exit 130 and "no checkpoint written", a
    SIGTERM exit -15: a complete run reported as lost."""
    import os
    import signal

    from cnnx.training.signals import FinishedRunSignals

    previous = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGINT", "SIGTERM")}
    handlers = FinishedRunSignals()
    handlers.wanted = True  # as the cnnx command's entry point sets it
    try:
        handlers.install()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0.1)  # the handler runs at the next bytecode
        handlers.finished = True
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        signal.sigtimedwait([], 0.1)
        assert handlers.late_signal == "SIGTERM"
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def test_the_finished_run_handlers_are_installed_only_for_the_cnnx_command():
    """cnnx.cli.main run from a script left them installed: the script's own Ctrl-C and SIGTERM
    were swallowed after the run."""
    import signal

    from cnnx.training.signals import FinishedRunSignals

    before = signal.getsignal(signal.SIGINT)
    FinishedRunSignals().install()  # not wanted: the process is not the cnnx command's
    assert signal.getsignal(signal.SIGINT) is before


def submitits_handler(calls):
    """A SIGUSR2 handler from submitit's module, as submitit installs in a SLURM job (its real one
    requeues the job and exits)."""

    def checkpoint_and_try_requeue(signum, frame):
        calls.append(signum)

    checkpoint_and_try_requeue.__module__ = "submitit.core.job_environment"
    return checkpoint_and_try_requeue


def test_submitits_sigusr2_stops_training_then_goes_to_submitit_whatever_came_first():
    """SLURM's preemption as submitit models it: SIGTERM, then SIGUSR2 within the same batch. The
    SIGUSR2 was dropped, so the job was never requeued and its sweep failed."""
    import os
    import signal

    from cnnx.training.signals import InterruptFlag, hand_over

    calls = []
    before = signal.signal(signal.SIGUSR2, submitits_handler(calls))
    try:
        for first in (signal.SIGUSR2, signal.SIGTERM):
            with InterruptFlag() as flag:
                os.kill(os.getpid(), first)
                os.kill(os.getpid(), signal.SIGUSR2)
                assert flag.signal_name == signal.Signals(first).name and flag.requeue_asked
                assert calls == []  # not before the batch has ended and the checkpoint is saved
            hand_over(flag)
            assert calls == [signal.SIGUSR2]
            calls.clear()
        with InterruptFlag() as flag:
            os.kill(os.getpid(), signal.SIGTERM)
        hand_over(flag)
        assert calls == []  # no SIGUSR2 came: nothing to requeue
        assert flag.stops_the_sweep  # ... and a sweep's job finishing then stops its sweep
        # A submitit job that got its SIGUSR2 while finishing is complete, whatever came first:
        # it raised StoppedBySignal and failed its sweep when the SIGTERM came first.
        for signals in ((signal.SIGTERM, signal.SIGUSR2), (signal.SIGUSR2, signal.SIGTERM)):
            with InterruptFlag() as flag:
                for signum in signals:
                    os.kill(os.getpid(), signum)
            assert not flag.stops_the_sweep
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_another_programs_own_sigusr2_handler_is_left_alone():
    """Any handler made SIGUSR2 stop training, and it never reached the program's own handler."""
    import os
    import signal

    from cnnx.training.signals import InterruptFlag

    got = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: got.append(signum))
    try:
        with InterruptFlag() as flag:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert got == [signal.SIGUSR2] and not flag.requested
    finally:
        signal.signal(signal.SIGUSR2, before)


@pytest.mark.parametrize("when", ["on_fit_start", "on_fit_error"])
def test_submitits_sigusr2_while_the_run_starts_or_cleans_up_waits_for_the_run_to_end(when):
    """SLURM's warning while a callback starts the run (its MLflow run just created) or, after a
    SIGTERM stopped training, while callbacks save the checkpoint and end the run: it went
    straight to submitit, which requeued the job at once, leaving the run FAILED with its
    SystemExit, or RUNNING."""
    import os
    import signal

    from cnnx.training.callbacks import Callback
    from cnnx.training.signals import TrainingInterrupted, hand_over

    class Signals(Callback):
        def on_fit_start(self, trainer):
            if when == "on_fit_start":
                os.kill(os.getpid(), signal.SIGUSR2)

        def on_epoch_end(self, trainer, epoch, metrics):
            if when == "on_fit_error":
                os.kill(os.getpid(), signal.SIGTERM)

        def on_fit_error(self, trainer, error):
            if when == "on_fit_error":
                os.kill(os.getpid(), signal.SIGUSR2)

    class LaterCallback(Callback):  # the tracker, which ends the MLflow run
        ended_with = None

        def on_fit_error(self, trainer, error):
            self.ended_with = error

    calls = []
    before = signal.signal(signal.SIGUSR2, submitits_handler(calls))
    later = LaterCallback()
    try:
        trainer = make_trainer(epochs=2, callbacks=[Signals(), later])
        with pytest.raises(TrainingInterrupted) as stopped:
            trainer.fit(tiny_data())
        assert calls == []  # not while the run was still being started or ended
        assert isinstance(later.ended_with, TrainingInterrupted)
        assert stopped.value.where == ("during epoch 1, batch 1" if when == "on_fit_start" else "after epoch 1")
        assert trainer.interrupts.requeue_asked
        hand_over(trainer.interrupts)  # as the CLI does once the run has ended
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_a_job_past_its_last_requeue_says_which_job_it_is(tmp_path, monkeypatch):
    """submitit's handler raises UncompletedJobError when the job timed out more often than it
    requeues: the sweep's process got it without knowing which of its jobs raised it."""
    import signal

    from submitit.core.utils import UncompletedJobError

    from cnnx.training.signals import InterruptFlag, hand_over

    def checkpoint_and_try_requeue(signum, frame):
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    checkpoint_and_try_requeue.__module__ = "submitit.core.job_environment"
    for name, value in {"SUBMITIT_EXECUTOR": "slurm", "SUBMITIT_FOLDER": str(tmp_path / "%j"), "SLURM_JOB_ID": "1004",
                        "SLURM_ARRAY_JOB_ID": "1000", "SLURM_ARRAY_TASK_ID": "3", "SLURM_PROCID": "0",
                        "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS": "1"}.items():
        monkeypatch.setenv(name, value)
    flag = InterruptFlag()
    flag.requeue_asked = True
    before = signal.signal(signal.SIGUSR2, checkpoint_and_try_requeue)
    try:
        with pytest.raises(UncompletedJobError) as raised:
            hand_over(flag)
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert str(raised.value) == (f"Job not requeued because: timed-out too many times. (job 1000_3; its logs are in "
                                 f"{tmp_path / '1000_3'})")


def test_a_signal_while_a_sweeps_job_ends_stops_the_sweep_unless_it_was_the_jobs_own():
    """A Ctrl-C or SIGTERM while a job finished or failed stops the sweep (while a failed job
    cleaned up it was swallowed, and the next job was killed mid-run); in a submitit job it is
    SLURM's for that job alone (scancel, a preemption): raising there left submitit no result,
    which the sweep read as a lost job ("out of memory?") and failed."""
    import os
    import signal

    from cnnx.app import _stop_the_sweep_if_signalled
    from cnnx.tracking.sweep_job import SweepJob
    from cnnx.training.signals import InterruptFlag, StoppedBySignal

    trainer = make_trainer()
    with trainer.interrupts:
        os.kill(os.getpid(), signal.SIGTERM)
    failure = ValueError("diverged")
    for launcher in ("basic", "joblib", "ray", None):
        with pytest.raises(StoppedBySignal) as stopped:
            _stop_the_sweep_if_signalled(SweepJob(None, None, launcher=launcher), trainer, "sweep/0", "failing", failure)
        assert stopped.value.signal_name == "SIGTERM" and stopped.value.__cause__ is failure
        assert str(stopped.value) == "SIGTERM received while job sweep/0 was failing"
    for launcher in ("submitit_local", "submitit_slurm"):
        _stop_the_sweep_if_signalled(SweepJob(None, None, launcher=launcher), trainer, "sweep/0", "finishing")
    _stop_the_sweep_if_signalled(None, trainer, None, "finishing")  # a single run: nothing to stop
    trainer.interrupts = InterruptFlag()  # no signal
    _stop_the_sweep_if_signalled(SweepJob(None, None, launcher="basic"), trainer, "sweep/0", "finishing")


def test_callbacks_hear_that_the_handlers_are_in_place_before_any_of_them_starts_the_run():
    """The MLflow helper process exits on a SIGTERM to the whole group until told that the
    trainer decides: told in its own on_fit_start, after the checkpoint callback's, a group's
    SIGTERM in between lost the run ('the MLflow tracking process exited')."""
    import signal

    from cnnx.training.callbacks import Callback

    heard = []

    class Listener(Callback):
        def on_signals_handled(self, trainer):
            heard.append(("handled", signal.getsignal(signal.SIGTERM) == trainer.interrupts._handle))

        def on_fit_start(self, trainer):
            heard.append(("start", None))

    make_trainer(epochs=1, callbacks=[Callback(), Listener()]).fit(tiny_data())
    assert heard == [("handled", True), ("start", None)]
