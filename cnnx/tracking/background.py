"""MLflow tracking in a helper process, so that it runs on another core while the engine trains.

Importing MLflow, opening the store, encoding kernel images and rendering the run report cost
a single run several seconds of one core, in series with training. ``BackgroundTracker`` is the
trainer callback that hands that work to a child process running the ordinary
``MlflowTracker``: each event goes through a pipe with what the tracker reads of the trainer
(metrics, the first conv layer's kernels, at the end the weights and the test split), and the
child replays it on a model of its own, rebuilt from the spec.

What stays as with the in-process tracker:

- a store that cannot be used fails the run with the tracker's one-line error before any
  training: a local store (sqlite, files) is checked in this process (``store_check``), and with a remote one (a tracking
  server) training starts only once the child has created its run there;
- a resumed run continues its MLflow run: checkpoints hold the run id, or, for one written
  before the child reported it, the ``cnnx.run_key`` tag the run was created with;
- the run ends FINISHED, FAILED or KILLED, and the command returns only once the child has
  delivered everything (or spilled it, as ``MlflowTracker`` does when the store is down);
- SIGINT, SIGTERM or SIGHUP sent to the whole process group (Ctrl-C, ``timeout``, a batch
  scheduler, a closed terminal) ends the run as one sent to this process alone: the child
  leaves it to the trainer;
- if this process dies (SIGKILL), the child stops at once and leaves the run RUNNING for
  ``trainer.resume`` to continue, as the killed process itself would have.

The child is forked where the platform allows it, so it starts with what this process has
already imported (in a sweep: MLflow itself) instead of a fresh interpreter.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import queue
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnx.data.splits import DataSplits
from cnnx.tracking.mlflow_tracker import (
    FORMER_TRACKER_STATE_KEYS, RUN_KEY_TAG, TRACKER_STATE_KEY, TrackingError, absolute_store_uri,
    ending_status, experiment_setting, moved_from, resolve_tracking_uri,
)
from cnnx.tracking.sqlite_store import build_aside, discard_built, sqlite_path
from cnnx.tracking.store_check import check_experiment, check_local_store, is_remote
from cnnx.training.callbacks import Callback
from cnnx.training.metrics import Evaluation

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from cnnx.engine.model import Model
    from cnnx.training.trainer import Trainer

#: Samples of the train and val splits the report may fall back on (feature maps, model
#: examples) when a run has no test split; the rest is not sent.
_FALLBACK_SAMPLES = 8
#: Seconds to wait, after an error or an interruption, for the child to record how the run
#: ended (it may still be starting); a second Ctrl-C stops the wait.
_ERROR_WAIT = 60.0
_POLL_SECONDS = 0.2


@dataclass
class _History:
    epochs: list[dict[str, float]] = field(default_factory=list)


@dataclass
class TrainerView:
    """What ``MlflowTracker`` and the run report read of a trainer, rebuilt in the child."""

    model: Model
    epoch: int = 0
    history: _History = field(default_factory=_History)
    data: DataSplits | None = None
    test_evaluation: Evaluation | None = None
    finished_training: bool = False
    early_stop: dict[str, int | bool] | None = None
    #: ``DataSplits.params()``: the data itself reaches the child only at the end.
    data_params: dict[str, str] = field(default_factory=dict)

    def log(self, message: str) -> None:
        """The training process prints what the tracker has to say (``BackgroundTracker``)."""


class BackgroundTracker(Callback):
    """A trainer callback with ``MlflowTracker``'s behaviour, its work done in a child process.

    ``options`` are ``MlflowTracker``'s keyword arguments; ``model_spec`` is the layer spec the
    trainer's model was built from (the child rebuilds the model from it).
    """

    state_key, former_state_keys = TRACKER_STATE_KEY, FORMER_TRACKER_STATE_KEYS

    def __init__(self, options: dict[str, Any], model_spec: dict[str, Any]):
        self.uri = resolve_tracking_uri(options.get("tracking_uri"))
        self.remote = is_remote(self.uri)
        check_local_store(self.uri)
        self.experiment_name = options["experiment_name"]
        self.experiment_setting = experiment_setting(options.get("config"))
        self.run_key = uuid.uuid4().hex
        self.run_id: str | None = None
        self.resumed = False
        #: The store the resumed checkpoint's run logged to (``MlflowTracker.logged_to``).
        self.logged_to: str | None = None
        self._may_branch = options.get("resume_file") is not None
        self._branched: str | None = None
        self._kernel_weight: str | None = None
        self._failure: str | None = None
        self._failure_status: int | None = None  # the exit status a gone process gives the run
        self._start_sent = self._started = self._finished = False
        context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        inbox, self._to_child = context.Pipe(duplex=False)
        self._from_child, outbox = context.Pipe(duplex=False)
        # Set while the trainer's signal handlers will end the run through the pipe: a SIGTERM
        # the child gets then came to the whole group, and is the trainer's to handle.
        self._trainer_handles_signals = context.Value("b", False, lock=False)
        # Started now, before the data loads, so that MLflow's import overlaps with it.
        self._process = context.Process(
            target=_serve, args=(inbox, outbox, (self._to_child, self._from_child), options, model_spec, os.getpid(),
                                 self._trainer_handles_signals),
            name="cnnx-tracking", daemon=True)
        self._process.start()
        # multiprocessing ends a daemon child at exit with SIGTERM (and waits for it), so the
        # child must obey that one: exit priority 0 runs before it.
        multiprocessing.util.Finalize(self, _set_false, args=(self._trainer_handles_signals,), exitpriority=0)
        inbox.close()
        outbox.close()
        # Sent from a thread: a pipe holds 64 KB, and the trainer must not wait while the
        # child is still importing MLflow and the start message carries all the weights.
        self._outgoing: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        self._send_error: OSError | None = None
        self._sender = threading.Thread(target=self._send_all, name="cnnx-tracking-sender", daemon=True)
        self._sender.start()

    # -- hooks -----------------------------------------------------------------------------
    def on_signals_handled(self, trainer: Trainer) -> None:
        # From here a SIGTERM or SIGHUP to the whole group (``timeout``, a closed terminal)
        # stops the run through the trainer, even while other callbacks start it.
        self._trainer_handles_signals.value = True

    def on_fit_start(self, trainer: Trainer) -> None:
        from cnnx.tracking.feature_maps import conv_layers

        first_conv = next(iter(conv_layers(trainer.model)), None)
        self._kernel_weight = None if first_conv is None else f"{first_conv}.weight"
        if sqlite_path(self.uri) is not None:
            # The tracking process meets a deleted experiment only once training is under way;
            # the store's file says so now (the run id is the checkpoint's, restored by now).
            check_experiment(self.uri, self.experiment_name, self.run_id if self.resumed else None,
                             self.experiment_setting)
        self._send("start", started_ms=int(time.time() * 1000),
                   run_id=self.run_id, run_key=self.run_key, resumed=self.resumed, logged_to=self.logged_to,
                   input_shape=trainer.data.input_shape, data_params=trainer.data.params(),
                   state=trainer.model.state_dict(),
                   history=list(trainer.history.epochs), epoch=trainer.epoch,
                   finished_training=trainer.finished_training)
        self._start_sent = True
        # An unreachable server fails the run now, not epochs later; so does a folder store,
        # which recent MLflow versions refuse to open (only a sqlite file is checked ahead).
        # A run resumed from a checkpoint file may become a new run: until the child says
        # which, a checkpoint would record the old run's id. So may one whose checkpoint logged
        # to another store, and a run that is refused for it must not train first.
        moved = moved_from(self.logged_to, self.uri) is not None
        if self.remote or sqlite_path(self.uri) is None or (self.resumed and (self._may_branch or moved)):
            self._wait_started()
            if self._branched is not None:
                trainer.log(self._branched)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self._poll()
        weights = {}
        if self._kernel_weight is not None:
            weights[self._kernel_weight] = dict(trainer.model.named_parameters())[self._kernel_weight].data.copy()
        self._send("epoch", epoch=epoch, metrics=dict(metrics), weights=weights)

    def on_fit_end(self, trainer: Trainer, test_metrics: dict[str, float]) -> None:
        self._send("end", test_metrics=dict(test_metrics), state=trainer.model.state_dict(),
                   epoch=trainer.epoch, history=list(trainer.history.epochs),
                   data=_report_data(trainer.data), test_evaluation=trainer.test_evaluation,
                   early_stop=trainer.early_stop)
        # Everything is delivered (or spilled) by the time the command returns.
        self._wait_finished(timeout=None)

    def on_fit_error(self, trainer: Trainer, error: BaseException) -> None:
        if self._failure is not None or not self._process.is_alive():
            return
        if not self._start_sent:  # another callback failed first: no run was created
            self._outgoing.put(None)
            self._process.join(timeout=5.0)
            return
        try:
            self._send("error", status=ending_status(error), message=f"{type(error).__name__}: {error}")
            self._wait_finished(timeout=_ERROR_WAIT)
        except TrackingError:
            pass  # the training error is the one to report

    def state_dict(self) -> dict[str, Any]:
        if self._start_sent and self._failure is None:
            self._poll()
        return {"run_id": self.run_id, "run_key": self.run_key, "tracking_uri": absolute_store_uri(self.uri)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")
        self.run_key = state.get("run_key") or self.run_key
        self.logged_to = state.get("tracking_uri")
        self.resumed = True

    # -- the pipe --------------------------------------------------------------------------
    def _send(self, kind: str, **payload: Any) -> None:
        self._raise_if_failed()
        if self._send_error is not None:  # the child is gone; it said why, or exited abnormally
            self._poll()
            self._raise_if_failed()
            raise self._fail(TrackingError(f"the MLflow tracking process stopped ({self._send_error})", exit_status=1))
        self._outgoing.put((kind, payload))

    def _send_all(self) -> None:
        while (message := self._outgoing.get()) is not None:
            try:
                self._to_child.send(message)
            except OSError as exc:
                self._send_error = exc
                break
        self._to_child.close()  # the child reads end-of-file: nothing more comes

    def _poll(self) -> None:
        while self._from_child.poll(0):
            self._receive()
        self._raise_if_failed()

    def _wait_started(self) -> None:
        while not self._started:
            self._wait_message(timeout=None)
        self._raise_if_failed()

    def _wait_finished(self, timeout: float | None) -> None:
        self._outgoing.put(None)
        try:
            while not self._finished:
                if not self._wait_message(timeout):
                    break
            self._raise_if_failed()
        finally:
            self._process.join(timeout=5.0)

    def _wait_message(self, timeout: float | None) -> bool:
        """Handle the child's next message; False if none came within ``timeout`` seconds."""
        waited = 0.0
        while not self._from_child.poll(_POLL_SECONDS):
            if not self._process.is_alive() and not self._from_child.poll(0):
                raise self._fail(self._ended())
            waited += _POLL_SECONDS
            if timeout is not None and waited >= timeout:
                return False
        self._receive()
        return True

    def _receive(self) -> None:
        try:
            kind, value = self._from_child.recv()
        except (EOFError, OSError) as exc:
            raise self._fail(self._ended()) from exc
        if kind == "started":
            (self.run_id, self.run_key, self._branched), self._started = value, True
        elif kind == "finished":
            self._finished = True
        elif kind == "failed":
            self._failure = value

    def _ended(self) -> TrackingError:
        """Why the tracking process is gone, that its checkpoints still resume the run, and the
        run's exit status: 128 + the signal's number for a process a signal ended (the shell's
        convention, which a sweep's killed worker follows too), else 1 — not the 2 of bad input."""
        # The pipe closes as the process dies, a moment before it can be reaped: exitcode would be None.
        self._process.join(timeout=1.0)
        code = self._process.exitcode
        how, status = f"exited (code {code})", 1
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal, which Python does not name
                name = f"signal {-code}"
            how = f"was killed by {name}" + (" (also the kernel's out-of-memory killer's signal)"
                                             if name == "SIGKILL" else "")
            status = 128 - code
        return TrackingError(f"the MLflow tracking process {how}; training stopped, and trainer.resume=true "
                             f"resumes it from its newest checkpoint, if it wrote one", exit_status=status)

    def _fail(self, ended: TrackingError) -> TrackingError:
        if self._failure is None:
            self._failure, self._failure_status = str(ended), ended.exit_status
            self._end_orphaned_run(str(ended))
        return TrackingError(self._failure, exit_status=self._failure_status)

    def _end_orphaned_run(self, reason: str) -> None:
        """End the run the gone tracking process had started, KILLED as an interrupted run is,
        with ``reason`` as its error: else the UI shows it RUNNING for good. (MLflow is imported
        in the training process only here.) A resume goes on with it all the same. Not for a
        tracking server: MLflow's retries could hold the failing run for minutes when the server
        is why the process died."""
        if self.remote:
            return
        try:
            from mlflow import MlflowClient

            from cnnx.tracking.mlflow_tracker import RUN_KEY_TAG, end_run

            client = MlflowClient(self.uri)
            run_id = self.run_id
            if run_id is None:  # killed after creating the run, before saying so: found by its key
                experiment = client.get_experiment_by_name(self.experiment_name)
                runs = [] if experiment is None else client.search_runs(
                    [experiment.experiment_id], f"tags.`{RUN_KEY_TAG}` = '{self.run_key}'", max_results=1)
                if not runs:
                    return
                run_id = runs[0].info.run_id
            client.set_tag(run_id, "error", reason)
            end_run(client, run_id, "KILLED")
        except Exception:  # noqa: BLE001 — the store may be why the process died; the error says what to do
            pass

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise TrackingError(self._failure, exit_status=self._failure_status)


def _set_false(flag: Any) -> None:
    flag.value = False


def _report_data(data: DataSplits | None) -> DataSplits | None:
    """The test split whole (plots are drawn from it); a few samples of train and val."""
    if data is None:
        return None
    return DataSplits(
        train=tuple(part[:_FALLBACK_SAMPLES] for part in data.train),
        val=tuple(part[:_FALLBACK_SAMPLES] for part in data.val),
        test=data.test, classes=list(data.classes), input_shape=data.input_shape,
        name=data.name, normalization=data.normalization, preparation=data.preparation,
    )


# -- the child ---------------------------------------------------------------------------------
def _serve(inbox: Connection, outbox: Connection, parent_ends: tuple[Connection, ...], options: dict[str, Any],
           model_spec: dict[str, Any], parent_pid: int, trainer_handles_signals: Any) -> None:
    # Without this the child itself would hold the pipe open and never see its parent die.
    for end in parent_ends:
        end.close()
    # Ctrl-C reaches the whole process group; the training process decides how the run ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The training process ends us with SIGTERM when it exits before its trainer's signal
    # handlers took charge, or without waiting for us; while they are in charge, a SIGTERM
    # here was sent to the whole group, as Ctrl-C is, and the trainer decides. So with a
    # SIGHUP: a closed terminal sends it to the whole group.
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: None if trainer_handles_signals.value else _terminated())
    try:
        _track(inbox, outbox, options, model_spec, parent_pid)
    finally:
        discard_built()


def _terminated(*_: Any) -> None:
    # Exiting here rather than raising: an exception could surface inside whatever code the
    # signal interrupted (a garbage-collection callback, say) and be printed, not propagated.
    discard_built()
    os._exit(0)


def _track(inbox: Connection, outbox: Connection, options: dict[str, Any], model_spec: dict[str, Any],
           parent_pid: int) -> None:
    from cnnx.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(**options)
    _open_store(tracker.tracking_uri)
    view: TrainerView | None = None
    warmed = False
    while True:
        if view is not None and not warmed and not inbox.poll(0):
            _warm_up(options)  # while the trainer is busy, so the report does not wait for it
            warmed = True
        try:
            kind, message = inbox.recv()
        except (EOFError, OSError):
            return  # the training process died: leave the run as it is, for resume
        if os.getppid() != parent_pid and kind not in ("end", "error"):
            return  # killed mid-run: what is left is for the resumed run to log, not for us
        try:
            if kind == "start":
                view = _start_view(model_spec, message)
                tracker.run_id = message["run_id"]
                tracker.tags[RUN_KEY_TAG] = message["run_key"]
                tracker.resuming = message["resumed"]
                tracker.logged_to = message["logged_to"]
                tracker.training_started_ms = message["started_ms"]
                tracker.on_fit_start(view)
                outbox.send(("started", (tracker.run_id, tracker.tags[RUN_KEY_TAG], tracker.branched)))
            elif kind == "epoch":
                parameters = dict(view.model.named_parameters())
                for name, value in message["weights"].items():
                    parameters[name].data[...] = value
                view.epoch = message["epoch"]
                view.history.epochs.append(message["metrics"])
                tracker.on_epoch_end(view, message["epoch"], message["metrics"])
            elif kind == "end":
                view.model.load_state_dict(message["state"])
                view.epoch = message["epoch"]
                view.history.epochs = message["history"]
                view.data, view.test_evaluation = message["data"], message["test_evaluation"]
                view.early_stop = message["early_stop"]
                tracker.on_fit_end(view, message["test_metrics"])
                outbox.send(("finished", None))
                return
            elif kind == "error":
                tracker.finish_with_error(message["status"], message["message"])
                outbox.send(("finished", None))
                return
        except TrackingError as exc:
            outbox.send(("failed", str(exc)))
            return
        except Exception as exc:  # a bug here must not leave the run RUNNING without a word
            traceback.print_exc(file=sys.stderr)
            outbox.send(("failed", f"MLflow tracking failed: {type(exc).__name__}: {exc}"))
            if kind != "error":
                tracker.finish_with_error("FAILED", f"tracking: {type(exc).__name__}: {exc}")
            return


def _start_view(model_spec: dict[str, Any], message: dict[str, Any]) -> TrainerView:
    from cnnx.engine.model import build_model

    model = build_model(model_spec, tuple(message["input_shape"]), rng=np.random.default_rng(0))
    model.load_state_dict(message["state"])
    return TrainerView(model=model, epoch=message["epoch"], history=_History(list(message["history"])),
                       finished_training=message["finished_training"], data_params=message["data_params"])


def _open_store(uri: str) -> None:
    """Import MLflow and open the store (or build a new one's schema aside) while the trainer
    still loads its data; MLflow keeps the store, so the tracker's client finds it ready. A
    failure here is left for the tracker to meet again and report."""
    try:
        from mlflow import MlflowClient

        path = sqlite_path(uri)
        if path is not None and not path.exists():
            build_aside(uri)  # linked into place when the run starts: a failed config leaves no store
        else:
            MlflowClient(uri)
    except Exception:  # noqa: BLE001 — reported by MlflowTracker.on_fit_start
        pass


def _warm_up(options: dict[str, Any]) -> None:
    """Import what the end-of-run report needs (matplotlib, MLflow's model code)."""
    if options.get("log_plots", True):
        import cnnx.tracking.plots  # noqa: F401
    if options.get("log_model", True):
        import cnnx.tracking.pyfunc_model
        import mlflow.pyfunc  # noqa: F401
