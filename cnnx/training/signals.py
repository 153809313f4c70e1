"""Graceful SIGINT/SIGTERM/SIGHUP: finish the current batch, then stop with a checkpoint.

While training runs, the first SIGINT, SIGTERM or SIGHUP only raises a flag that the trainer
reads between batches, so the state it saves is a consistent one (weights, optimizer and RNGs
all after the same batch). A second SIGINT gives the usual immediate ``KeyboardInterrupt``,
for when even one more batch is too long to wait; a repeated SIGTERM or SIGHUP does not, as
``timeout`` and a closing terminal may deliver theirs more than once.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from types import FrameType
from typing import Any

# SIGHUP: the terminal went away (an ssh session closed), which should not lose the run either.
HANDLED = tuple(name for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def silence_hung_up_terminal() -> None:
    """Point stdout and stderr at /dev/null where they are a terminal that has hung up (the
    ssh session closed, then came SIGHUP): every write there fails with EIO, which would fail
    a run that is only stopping and lose its exit code. Its closing line still reaches the
    run's app.log. (A hung-up terminal no longer passes ``isatty``; an empty write still
    tells it from a live one, a pipe or a file, which take it.)"""
    for fd in (1, 2):
        try:
            os.write(fd, b"")
        except OSError as error:
            if error.errno == errno.EIO:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, fd)
                os.close(null)


class StoppedBySignal(KeyboardInterrupt):
    """A signal stopped a sweep outside any training loop (between jobs, or once a job had
    finished): its name decides the exit code, 128 + its number."""

    def __init__(self, signal_name: str, message: str):
        super().__init__(message)
        self.signal_name = signal_name

    def __reduce__(self):
        # Raised in a parallel sweep's worker, it reaches the sweep's process pickled.
        return type(self), (self.signal_name, str(self)), self.__dict__


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at a batch boundary because of a signal.

    ``checkpoint`` is set by the checkpoint callback once the state is saved; the CLI reads
    it to tell the user how to resume.
    """

    def __init__(self, signal_name: str, epoch: int, batch: int):
        self.signal_name, self.epoch, self.batch = signal_name, epoch, batch
        # Also the MLflow run's error tag, which must say what the console said.
        super().__init__(f"{signal_name} received; stopped {self.where}")
        self.checkpoint: str | None = None
        self.run_dir: str | None = None
        #: A job of a multirun: the sweep resumes as a whole (``sweep.resume=true``), which
        #: needs its runs tracked.
        self.in_sweep = False
        self.sweep_tracked = False
        #: No checkpoint callback ran (trainer.checkpoint.enabled=false), as opposed to one
        #: that failed to write.
        self.checkpoints_off = False

    @property
    def where(self) -> str:
        """``during epoch 3, batch 7``; ``after epoch 3`` when it came between epochs (batch 0)."""
        return f"during epoch {self.epoch}, batch {self.batch}" if self.batch else f"after epoch {self.epoch}"

    def __reduce__(self):
        # A parallel sweep's worker sends it back to the sweep's process pickled; the default
        # (class, args) would call __init__ with the message alone.
        return type(self), (self.signal_name, self.epoch, self.batch), self.__dict__


class InterruptFlag:
    """Context manager installing the handlers (main thread only; a no-op elsewhere)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        #: submitit's SIGUSR2 came (before or after another signal): ``hand_over`` owes it a call.
        self.requeue_asked = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    @property
    def stops_the_sweep(self) -> bool:
        """Whether a signal that came while a sweep's job was finishing stops the sweep: not in a
        submitit job that got its SIGUSR2 (SLURM stops such a job on its own, and this one is
        complete), whichever signal came first."""
        return self.requested and not self.requeue_asked

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == getattr(signal, "SIGUSR2", None):
            self.requeue_asked = True
            self.signal_name = self.signal_name or "SIGUSR2"
            return
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt("second Ctrl-C: stopped at once")  # the MLflow run's error tag
        # The first names the stop (and the exit code): a repeat or another signal (a SIGTERM
        # sent to the whole group after a closed terminal's SIGHUP) changes nothing.
        self.signal_name = self.signal_name or signal.Signals(signum).name
        if signum == getattr(signal, "SIGHUP", None):
            silence_hung_up_terminal()

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            for name in HANDLED:
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._handle)
            warning = getattr(signal, "SIGUSR2", None)
            if warning is not None and _submitits(signal.getsignal(warning)):
                # submitit's warning before SLURM stops the job (sent ahead of the time limit,
                # and on a preemption), on which its handler requeues the job: the batch ends
                # and a checkpoint is saved first; ``hand_over`` then calls it. Another
                # program's own SIGUSR2 handler is left alone.
                self._previous[warning] = signal.signal(warning, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def _submitits(handler: Any) -> bool:
    return callable(handler) and str(getattr(handler, "__module__", "")).startswith("submitit.")


def hand_over(interrupts: InterruptFlag) -> None:
    """After training stopped with submitit's SIGUSR2 among the signals, its checkpoint saved
    and its run ended: call submitit's handler, which requeues the job and exits (past its
    requeues it raises its own error)."""
    if not interrupts.requeue_asked:
        return
    handler = signal.getsignal(signal.SIGUSR2)
    if _submitits(handler):
        try:
            handler(signal.SIGUSR2, None)
        except RuntimeError as no_requeue:  # UncompletedJobError: timed out more often than it requeues
            # The sweep's process gets this error, not which of its jobs raised it: named here.
            no_requeue.args = (f"{no_requeue} ({_submitit_job()})",)
            raise


def _submitit_job() -> str:
    """``job 1000_3; its logs are in …/.submitit/1000_3``, from inside a submitit job."""
    import submitit

    environment = submitit.JobEnvironment()
    return f"job {environment.job_id}; its logs are in {environment.paths.folder}"


class FinishedRunSignals:
    """A single CLI run's handlers from just before training to the process's exit.

    Until the run has finished they act as Python's defaults would (SIGINT raises
    ``KeyboardInterrupt``, SIGTERM and SIGHUP end the process); the trainer's own handlers
    take over while it trains. Once the run has finished, a signal is only noted: the run is
    complete, and a late Ctrl-C or a scheduler's SIGTERM must not turn it into an exit 130 or
    −15, or a traceback from the teardown, which read as a lost run.
    """

    def __init__(self) -> None:
        #: Set by the ``cnnx`` command's entry point only: a script or notebook that runs
        #: ``cnnx.cli.main`` in its own process keeps its own handlers after the run.
        self.wanted = False
        self.finished = False
        self.late_signal: str | None = None

    def install(self) -> None:
        if self.wanted and threading.current_thread() is threading.main_thread():
            for name in HANDLED:
                signal.signal(getattr(signal, name), self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.finished:
            self.late_signal = self.late_signal or signal.Signals(signum).name
            if signum == getattr(signal, "SIGHUP", None):
                silence_hung_up_terminal()
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


#: The one a CLI run installs (``cnnx.app``) and its exit reads (``cnnx.cli.entry``).
FINISHED_RUN_SIGNALS = FinishedRunSignals()
