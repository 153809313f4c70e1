"""SIGTERM and SIGHUP stop a sweep's own process the way Ctrl-C does.

Python turns only SIGINT into an exception; any other signal kills the process outright, so
the atexit hook that ends the sweep's parent MLflow run never runs (it stays RUNNING), no
resume hint is printed and the launcher's workers are orphaned. Yet SLURM, systemd and
``timeout`` stop with SIGTERM, and a closed ssh session sends SIGHUP. While a multirun runs,
the first of them raises ``StoppedBySignal`` (a ``KeyboardInterrupt``) in the sweep's process,
where each launcher already handles Ctrl-C: joblib kills its workers, Hydra's basic launcher
stops its in-process job. Jobs in processes of their own that survive that (submitit's local
jobs) are then stopped by ``stop_children``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnx.training.signals import StoppedBySignal, silence_hung_up_terminal

STOPPING = tuple(name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


#: Set once a signal or a lost worker has stopped this process's sweep, whose console has said
#: how to continue it: its summary at exit then adds no line about failed jobs.
sweep_stopped = False


class SweepSignals:
    """Installs the handlers in the sweep's process (main thread only; a no-op elsewhere).

    A trainer running a job in this process (Hydra's basic launcher) takes the signals over
    while it trains and hands them back after, as it does with SIGINT's default handler.
    """

    def __init__(self) -> None:
        #: SIGTERM or SIGHUP, once one has stopped the sweep.
        self.signal_name: str | None = None
        self._stopping = False
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for name in STOPPING:
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            # A forked joblib worker inherits this handler; outside its trainer's handlers it
            # ends as it would without cnnx, and its sweep deals with the lost worker.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if signum == getattr(signal, "SIGHUP", None):
            silence_hung_up_terminal()
        if self._stopping:
            # ``timeout`` signals the command and then its whole process group, which holds
            # the command too: a repeat must not cut short the stop the first one began.
            return
        self.signal_name, self._stopping = signal.Signals(signum).name, True
        raise StoppedBySignal(self.signal_name, f"{self.signal_name} received; the sweep stops")

    def stopping(self) -> None:
        """The sweep is being stopped (by any signal): repeats of SIGTERM or SIGHUP are ignored
        from here on, so that they cannot kill the process before it has ended the sweep's
        parent run, at exit."""
        self._stopping = True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class JoblibTrackerOutlivesSighup(Callback):
    """Starts joblib's resource tracker with SIGHUP blocked, before the joblib launcher does.

    The tracker ignores SIGINT and SIGTERM, to outlive the sweep's other processes and clean
    up after them, but not SIGHUP: a SIGHUP to the sweep's process group killed it, and the
    sweep's process printed a warning and the tracker it started again a traceback. The
    blocked signal stays blocked in it across its exec; this process's is restored at once,
    and one that came meanwhile is delivered then.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from cnnx.fork_workers import joblib_launcher

        if not joblib_launcher(config) or not hasattr(signal, "SIGHUP") or not hasattr(signal, "pthread_sigmask"):
            return
        from joblib.externals.loky.backend.resource_tracker import ensure_running

        before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            ensure_running()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def stop_children(term_grace: float = 10.0, int_grace: float = 5.0, settle: float = 0.0) -> None:
    """Stop the sweep's child processes that outlive its launcher (submitit's local jobs,
    which go on after the sweep's process exits), and wait until they have ended.

    SIGTERM first: a job that is training finishes its batch and saves a checkpoint, and one
    that got the signal already (sent to the whole process group) takes a repeat as nothing.
    Those still running after ``term_grace`` (submitit has its jobs ignore SIGTERM outside
    training) get SIGINT, what a terminal's Ctrl-C sends them, on which submitit's local job
    controller cancels its job. Children that ignore SIGINT (joblib's resource tracker, cnnx's
    tracking helper) are not workers: they end with this process. ``settle``: how long children
    that may have got the signal themselves have to end before they are sent any.
    """
    children = _still_alive([pid for pid in _live_children() if _takes_sigint(pid)], settle)
    for signum, grace in ((signal.SIGTERM, term_grace), (signal.SIGINT, int_grace)):
        for pid in children:
            try:
                os.kill(pid, signum)
            except OSError:
                pass
        children = _still_alive(children, grace)
        if not children:
            return


def _still_alive(pids: list[int], seconds: float) -> list[int]:
    """Those of ``pids`` that have not ended within ``seconds``."""
    deadline = time.monotonic() + seconds
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [pid for pid in pids if _alive(pid)]
    return pids


def _live_children() -> list[int]:
    """This process's children that have not exited (Linux's /proc; none found elsewhere)."""
    me, found = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == me and stat[0] != "Z":
                found.append(int(entry))
    return found


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read().decode(errors="replace")
    except OSError:
        return None
    # The command name, in parentheses, may itself hold spaces and parentheses.
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    # An exited child stays a zombie until the launcher's Popen object would reap it.
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _takes_sigint(pid: int) -> bool:
    """Whether SIGINT reaches ``pid``'s handler (or kills it): a helper that ignores it may
    block it first, while it starts (joblib's resource tracker does)."""
    masks = 0
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith(("SigIgn:", "SigBlk:")):
                    masks |= int(line.split()[1], 16)
    except (OSError, ValueError):
        return False
    return not masks >> (signal.SIGINT - 1) & 1
