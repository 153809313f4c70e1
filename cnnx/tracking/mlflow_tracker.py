"""MLflow tracking as a trainer callback: run lifecycle, params, metrics, images, artifacts."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnx.cli import report, warn
from cnnx.errors import CnnxError, flat_message
from cnnx.tracking import after_fork  # noqa: F401 — registers the fork hook
from cnnx.tracking.batched import log_params
from cnnx.tracking.feature_maps import conv_layers
from cnnx.tracking.images import kernel_grid
from cnnx.tracking.outbox import Outbox, Pending
from cnnx.tracking.sqlite_store import absolute_store_uri, create_store_atomically, sqlite_path
from cnnx.tracking.sweep_summary import log_settings
from cnnx.training.callbacks import Callback
from cnnx.training.objective import running_best

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cnnx.training.trainer import Trainer

#: Identifies a run before MLflow has given it an id (see ``BackgroundTracker``).
RUN_KEY_TAG = "cnnx.run_key"
#: A run resumed from a checkpoint its run had gone past is a run of its own: these name the
#: run and the checkpoint file it branched from.
RESUMED_FROM_TAG = "cnnx.resumed_from"
RESUMED_FROM_CHECKPOINT_TAG = "cnnx.resumed_from.checkpoint"
#: A run resumed into another store than its checkpoint's run (tracking.uri set to it) is a
#: new run there: this names the store its checkpoint logged to.
RESUMED_FROM_STORE_TAG = "cnnx.resumed_from.store"
#: Where a checkpoint keeps a tracker's state: the MLflow run it logs to, the same for both
#: trackers, so a run resumed with the other ``tracking.background`` continues that run.
TRACKER_STATE_KEY = "mlflow_run"
#: Checkpoints of earlier versions kept it under the tracker's class name.
FORMER_TRACKER_STATE_KEYS = ("MlflowTracker", "BackgroundTracker")
#: Set on a run that early stopping ended (``early_stopping_tags``).
EARLY_STOPPING_TAG = "cnnx.early_stopping."
#: The name cnnx gave a run from its overrides (none when tracking.run_name named it): a run
#: still so named may be renamed on resume; one renamed since, in the UI, keeps its name.
AUTOMATIC_NAME_TAG = "cnnx.run_name.automatic"
#: The config a resumed run was started with, when it goes on with another (``config.yaml``).
INITIAL_CONFIG = "config.initial.yaml"
#: MLflow's own default, spelled out so runs land in ./mlflow.db whatever MLflow's version.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch
_MAX_PARAM_LENGTH = 6000
#: Set by every resumed run: they say that it was resumed, not how it differs.
_RESUMING_SWITCHES = ("trainer.resume", "sweep.resume")
#: MLflow's own HTTP retries (7, back-off factor 2: minutes) would stall training at every
#: epoch while a server is down; the outbox retries instead. Users can still override these.
_HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


class TrackingError(CnnxError):
    """The MLflow store cannot be reached or written, or the process logging to it is gone.

    ``exit_status`` is the command's exit status when it is not the 2 of bad input: a store
    refused at the start is the user's to fix, a tracking process killed mid-run is not.
    """

    def __init__(self, message: str, exit_status: int | None = None) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def use_short_http_retries(uri: str) -> None:
    """Fail fast against a tracking server that is down (unless the user set MLflow's retries)."""
    if uri.startswith(("http://", "https://")):
        for key, value in _HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(key, value)
        # urllib3 logs every retry on the console; cnnx reports an outage once, in its own words.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def connection_failure(text: str) -> str | None:
    """Why a tracking server could not be reached, dug out of requests' and urllib3's wrappers."""
    if "Max retries exceeded" not in text:
        return None
    reason = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return reason.group(1).strip() if reason else "timed out" if "imeout" in text else "no connection"


def unusable_store(uri: str, exc: BaseException, setting: str | None = None) -> TrackingError:
    """The one-line error for a store MLflow could not use; ``setting`` is where the user gave it
    (by default that of a run's store, ``run_store_setting``)."""
    setting = setting or run_store_setting(uri)
    text = str(exc)
    reason = connection_failure(text)
    if reason:
        return TrackingError(f"cannot reach MLflow tracking server {uri!r} ({setting}): {reason}")
    schemes = re.search(r"Supported URI schemes are: \[([^\]]*)\]", text)
    if schemes:  # MLflow words it as a model-registry problem, whichever store it was building
        names = (name.strip(" '\"") for name in schemes.group(1).split(","))
        accepted = ", ".join(f"{name}:" for name in names if name)
        return TrackingError(f"{setting}={uri!r} has a scheme MLflow does not support; accepted: {accepted} "
                             f"or a folder path with MLFLOW_ALLOW_FILE_STORE=true")
    if "MLFLOW_ALLOW_FILE_STORE" in text:
        # MLflow reads a plain path as a folder store, which its recent versions refuse to open.
        # An existing folder (an old mlruns/) cannot be the database file: one inside it can.
        database = "sqlite:///PATH" if ":" in uri else (
            f"sqlite:///{os.path.join(uri, 'mlflow.db')}" if os.path.isdir(uri) else f"sqlite:///{uri}")
        return TrackingError(
            f"{setting}={uri!r} is a folder path, which MLflow no longer opens as a store; accepted: "
            f"{database} (a database file), http(s)://HOST:PORT (a tracking server), or a folder "
            f"with MLFLOW_ALLOW_FILE_STORE=true")
    detail = text.splitlines()[0] if text else ""
    return TrackingError(f"cannot use MLflow store {uri!r} ({setting}): {type(exc).__name__}: {shortened(detail)}")


def shortened(text: str, limit: int = 300) -> str:
    """``text`` cut to about ``limit`` characters at a word boundary, marked with "…": MLflow's
    messages run on with advice after the part that says what is wrong."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return f"{cut} …"


def experiment_setting(config: Mapping[str, Any] | None) -> str:
    """The key that names a run's experiment: ``tracking.experiment_name`` when set, else
    ``experiment_name`` (``cnnx.app.logged_in``)."""
    return "tracking.experiment_name" if ((config or {}).get("tracking") or {}).get("experiment_name") \
        else "experiment_name"


def deleted_experiment(uri: str, name: str, experiment_id: str, run_id: str | None = None,
                       setting: str = "experiment_name") -> TrackingError:
    """The refusal of a deleted experiment, with the command that restores it (as MLflow's own
    "Cannot set a deleted experiment" suggests)."""
    store = absolute_store_uri(uri)
    restore = f"MLFLOW_TRACKING_URI={store} mlflow experiments restore --experiment-id {experiment_id}"
    if run_id is not None:
        return TrackingError(f"trainer.resume: the checkpoint's MLflow run {run_id} is in experiment {name!r} "
                             f"(id {experiment_id}), which is deleted in store {store}; restore it with: {restore}")
    return TrackingError(f"{setting}={name!r}: MLflow experiment {experiment_id} of that name is deleted in store "
                         f"{store}; restore it with: {restore}, or choose another {setting}")


def ending_status(error: BaseException) -> str:
    """How a run stopped by ``error`` ends in MLflow: an interruption is not a failure."""
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


def resolve_tracking_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def moved_from(logged_to: str | None, tracking_uri: str) -> str | None:
    """``logged_to``, the store a resumed checkpoint's run logged to, when it is not
    ``tracking_uri``: a relative store (the default ./mlflow.db) is another one from another
    working directory."""
    return None if logged_to is None or logged_to == absolute_store_uri(tracking_uri) else logged_to


def run_store_setting(uri: str) -> str:
    """Where a run's or sweep's store ``uri`` came from: ``tracking.uri``, or, when that is unset,
    the environment (``resolve_tracking_uri``)."""
    from_environment = os.environ.get("MLFLOW_TRACKING_URI")
    # A sweep holds its store's URI made absolute: sqlite:///mlflow.db is sqlite:////work/mlflow.db.
    given = from_environment and uri in (from_environment, absolute_store_uri(from_environment))
    return "$MLFLOW_TRACKING_URI" if given else "tracking.uri"


def store_setting(uri: str | None) -> str:
    """Where a read-only command's store came from, to name it in errors."""
    if uri:
        return "--tracking-uri"
    return "$MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the default store"


def existing_store(uri: str | None) -> str:
    """The store a command that only reads (``compare``, ``predict``) opens.

    MLflow creates a missing local store on first use, so a mistyped path or the wrong folder
    would leave a new, empty store behind and then report that nothing is in it.
    """
    from cnnx.tracking.store_check import check_store_uri

    store = resolve_tracking_uri(uri)
    # sqlite:/// would open a new database in memory, as empty as a new file.
    check_store_uri(store, store_setting(uri))
    use_short_http_retries(store)
    path = sqlite_path(store)
    if path is None and not store.startswith(("sqlite:", "http:", "https:")):
        # Imported only here: for the usual sqlite store, a missing file is reported at once.
        from mlflow.exceptions import MlflowException
        from mlflow.utils.file_utils import local_file_uri_to_path
        from mlflow.utils.uri import is_local_uri

        try:
            if is_local_uri(store):  # a file store: a path or a file: URI
                path = Path(local_file_uri_to_path(store))
        except MlflowException:  # file://host/...: MLflow's own error says what to use instead
            pass
    if path is not None and not path.exists():
        source = store_setting(uri)
        if source == "the default store":
            source = "the default; set --tracking-uri or $MLFLOW_TRACKING_URI"
        raise TrackingError(f"no MLflow store at {store} ({source}): '{path.absolute()}' "
                            f"does not exist; train a run first or point to an existing store")
    return store


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` → ``{"a.b": "1"}``: nested config keys as MLflow param names."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)[:_MAX_PARAM_LENGTH]
    return flat


@contextlib.contextmanager
def no_artifacts_progress_bar():
    """MLflow's download bars off for the block only (the variable is process-wide, and a later
    sweep job or a notebook user of this process may want them), unless the user set it."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if name in os.environ:
        yield
        return
    os.environ[name] = "false"
    try:
        yield
    finally:
        os.environ.pop(name, None)


def log_weights(client, run_id: str, weights: dict[str, np.ndarray], description: dict[str, Any] | None) -> None:
    """The final weights as run artifacts, with the ``cnnx_model.json`` naming their outputs."""
    from cnnx.inference import save_weights

    with no_artifacts_progress_bar(), tempfile.TemporaryDirectory() as tmp:
        client.log_artifacts(run_id, str(save_weights(tmp, weights, description)))


def end_run(client, run_id: str, status: str) -> None:
    """``client.set_terminated``, with the links MLflow then prints for a run on a tracking
    server ("View run ... at: http://...") on stderr: cnnx's stdout holds the run's summary,
    epoch lines and test metrics only, which ``> train.log`` keeps."""
    with contextlib.redirect_stdout(sys.stderr):
        client.set_terminated(run_id, status)


class MlflowTracker(Callback):
    state_key, former_state_keys = TRACKER_STATE_KEY, FORMER_TRACKER_STATE_KEYS

    def __init__(
        self,
        *,
        experiment_name: str,
        config: Mapping[str, Any],
        config_yaml: str,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: Mapping[str, str] | None = None,
        log_kernels: bool = True,
        log_weights: bool = True,
        spill_dir: str | os.PathLike[str] | None = None,
        flush_timeout: float = 60.0,
        parent_run_id: str | None = None,
        log_plots: bool = True,
        log_model: bool = True,
        resume_file: str | None = None,
        newer_checkpoint: str | None = None,
    ):
        """``resume_file``: the checkpoint file ``trainer.resume`` names, ``newer_checkpoint``
        one of its run's written after it, found beside it; a run resumed from a point its run
        has gone past is logged as a new run (see ``_branches_off``)."""
        self.experiment_name = experiment_name
        self.config = config
        self.config_yaml = config_yaml
        self.run_name = run_name
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        #: Set for this run with ``tracking.uri``: then the store was chosen, not defaulted
        #: relative to where the command runs.
        self.store_chosen = tracking_uri is not None
        # tracking.run_name named the run; else its name comes from its overrides.
        self.name_chosen = ((config or {}).get("tracking") or {}).get("run_name") is not None
        #: The store the resumed checkpoint's run logged to (absolute; None: not resumed, or
        #: a checkpoint written before cnnx recorded it).
        self.logged_to: str | None = None
        self.tags = dict(tags or {})
        if parent_run_id:
            # Explicit, not mlflow's active run: a sweep's jobs run in other processes.
            self.tags["mlflow.parentRunId"] = parent_run_id
        self.log_kernels = log_kernels
        self.log_weights = log_weights
        self.log_plots = log_plots
        self.log_model = log_model
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.resuming = False
        #: Continues a FINISHED run that has nothing left to train: leave its record alone.
        self._complete = False
        self._kernel_layer: str | None = None
        # Where calls that could not be delivered by the end of the run are written.
        self.spill_dir = Path(spill_dir) if spill_dir is not None else Path("mlflow-unsent")
        self.flush_timeout = flush_timeout
        self.outbox = Outbox(self.tracking_uri)
        #: (key, step) pairs the store already holds for a resumed run: never logged twice.
        self._logged: set[tuple[str, int]] = set()
        self.resume_file, self.newer_checkpoint = resume_file, newer_checkpoint
        #: Why this run is a new one rather than its checkpoint's (None when it is not).
        self.branched: str | None = None
        #: When training started (ms since the epoch), if before the run is created: a tracking
        #: process creates it once MLflow is imported, a second or more into training, and
        #: the UI's duration of a run counts from its start time.
        self.training_started_ms: int | None = None
        #: Logged as ``best_<monitor>`` every epoch (``cnnx.training.objective``).
        self.monitor = ((config or {}).get("trainer") or {}).get("monitor") or "val_acc"
        use_short_http_retries(self.tracking_uri)

    # -- lifecycle -------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        moved = moved_from(self.logged_to, self.tracking_uri)
        path = sqlite_path(self.tracking_uri)
        if moved and not self.store_chosen and path is not None and not path.exists():
            raise self._not_in_this_store(moved)  # without creating a store the run is not in
        try:
            create_store_atomically(self.tracking_uri)
            self.client = MlflowClient(self.tracking_uri)
        except Exception as exc:
            raise self._unreachable(exc) from exc
        if moved and not self._holds_checkpoint_run():
            if not self.store_chosen:
                raise self._not_in_this_store(moved)
            self._start_over_here(moved)
        if self.run_id is not None and self._continue_run(trainer):  # restored from a checkpoint
            return
        with self._refused_by_store():  # any store failure, before any training happens
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment is not None and experiment.lifecycle_stage == "deleted":
                raise deleted_experiment(self.tracking_uri, experiment.name, experiment.experiment_id,
                                         setting=experiment_setting(self.config))
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self.client.create_experiment(self.experiment_name))
            self.run_id = self._run_with_key(experiment_id)
        # A checkpoint written before its run id was known.
        if self.run_id is not None and self._continue_run(trainer):
            return
        automatic = {} if self.name_chosen or not self.run_name else {AUTOMATIC_NAME_TAG: self.run_name}
        with self._refused_by_store():  # the store's first write: a read-only one fails here
            run = self.client.create_run(experiment_id, start_time=self.training_started_ms, run_name=self.run_name,
                                         tags={**self.tags, **automatic})
        self.run_id = run.info.run_id
        data = trainer.data.params() if trainer.data is not None else getattr(trainer, "data_params", {})
        # The model's size beside its settings: what a sweep over widths is plotted against.
        size = {"model.num_parameters": str(trainer.model.parameter_count())}
        params = [Param(k, v) for k, v in {**flatten(self.config), **data, **size}.items()]
        try:
            with self._refused_by_store():
                log_params(self.client, self.run_id, params)
                self.client.log_text(self.run_id, self.config_yaml, "config.yaml")
                self.client.log_text(self.run_id, trainer.model.summary(), "model_summary.txt")
        except TrackingError as error:
            self._abandon_run(str(error))
            raise
        self._kernel_layer = first_conv_layer(trainer.model)
        if self._kernel_layer is not None:
            # A branch starts from its checkpoint's weights, not from initial ones.
            self._log_kernels(trainer, step=0 if self.branched is None else trainer.epoch)
        # A resumed run whose process died before its MLflow run was created (the tracking
        # process was still starting), or a branch: the checkpoint's epochs would otherwise be missing.
        self._log_missing_history(trainer)
        if self.branched is not None:
            self.branched += (f": logging to a new run {self.run_id} (tagged {RESUMED_FROM_TAG}), "
                              f"leaving that one as it was")
            trainer.log(self.branched)

    def _run_with_key(self, experiment_id: str) -> str | None:
        """The run tagged with this tracker's ``cnnx.run_key`` when it resumes one (its
        checkpoint was written before the run id came back from a background tracker)."""
        key = self.tags.get(RUN_KEY_TAG)
        if not key or not self.resuming:
            return None
        runs = self.client.search_runs([experiment_id], f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1)
        return runs[0].info.run_id if runs else None

    def _unreachable(self, exc: BaseException) -> TrackingError:
        return unusable_store(self.tracking_uri, exc)

    @contextlib.contextmanager
    def _refused_by_store(self):
        """A store's refusal as the tracker's one-line error, not MLflow's traceback."""
        try:
            yield
        except TrackingError:
            raise
        except Exception as exc:
            raise self._unreachable(exc) from exc

    def _abandon_run(self, message: str) -> None:
        """End a run the store refused before training FAILED, if the store lets us, rather than
        leave it RUNNING; the tracker then forgets it (nothing more is logged to it)."""
        with contextlib.suppress(Exception):
            self.client.set_tag(self.run_id, "error", message[:_MAX_PARAM_LENGTH])
            end_run(self.client, self.run_id, "FAILED")
        self.run_id = None

    # -- a checkpoint of another store ----------------------------------------------------
    def _holds_checkpoint_run(self) -> bool:
        """Whether this store has the resumed checkpoint's run (a copy of its store may)."""
        from mlflow.exceptions import MlflowException

        try:
            if self.run_id is not None:
                try:
                    self.client.get_run(self.run_id)
                except MlflowException as exc:
                    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                        return False
                    raise
                return True
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            return experiment is not None and self._run_with_key(experiment.experiment_id) is not None
        except Exception as exc:
            raise self._unreachable(exc) from exc

    def _checkpoint_run(self) -> str:
        if self.run_id is not None:
            return f"MLflow run {self.run_id}"
        return f"MLflow run tagged {RUN_KEY_TAG}={self.tags.get(RUN_KEY_TAG)}"

    def _where_this_store_comes_from(self) -> str:
        if self.store_chosen:
            return "tracking.uri"
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return "$MLFLOW_TRACKING_URI"
        return f"the default store, ./{sqlite_path(DEFAULT_TRACKING_URI)} in the working directory"

    def _not_in_this_store(self, logged_to: str) -> TrackingError:
        """Refused: a new run here would silently split the run's history across two stores."""
        here = absolute_store_uri(self.tracking_uri)
        error = TrackingError(
            f"trainer.resume: the checkpoint logged to {self._checkpoint_run()} in store {logged_to}, not in "
            f"{here} ({self._where_this_store_comes_from()}), which does not hold it; continue it with "
            f"tracking.uri={logged_to}, or start a new run in this store with tracking.uri={here}")
        self.run_id = None  # never continued: how the run ended stays as it was
        return error

    def _start_over_here(self, logged_to: str) -> None:
        """``tracking.uri`` names a store without the checkpoint's run: a new run there, which
        logs the checkpoint's epochs first and names where the others are."""
        warn(f"trainer.resume: the checkpoint logged to {self._checkpoint_run()} in store {logged_to}, not in "
             f"{absolute_store_uri(self.tracking_uri)} (tracking.uri): logging to a new run there, tagged "
             f"{RESUMED_FROM_STORE_TAG}; continue the old one with tracking.uri={logged_to}")
        self.tags[RESUMED_FROM_STORE_TAG] = logged_to
        self._become_new_run(resumed_from=self.run_id)

    def _become_new_run(self, resumed_from: str | None) -> None:
        """Log to a new run, tagged with the run (when known) and checkpoint it resumes from."""
        if resumed_from is not None:
            self.tags[RESUMED_FROM_TAG] = resumed_from
        if self.resume_file is not None:
            self.tags[RESUMED_FROM_CHECKPOINT_TAG] = self.resume_file
        self.run_id, self.resuming = None, False

    def _continue_run(self, trainer: Trainer) -> bool:
        """Mark the checkpoint's run RUNNING again and log what its checkpoint holds but the
        store does not (the killed process may have died between the two). False, with the
        run untouched, when this run is to be a new one instead (``_branches_off``)."""
        try:
            run = self.client.get_run(self.run_id)
        except Exception as exc:
            # Not continued: the run, if it exists, keeps the status and error it had.
            run_id, self.run_id = self.run_id, None
            raise TrackingError(
                f"cannot continue MLflow run {run_id} (recorded in the checkpoint) in store "
                f"{self.tracking_uri!r} (tracking.uri): {type(exc).__name__}: "
                f"{shortened((str(exc).splitlines() or [''])[0])}"
            ) from exc
        with self._refused_by_store():
            experiment = self.client.get_experiment(run.info.experiment_id)
            if experiment.lifecycle_stage == "deleted":  # MLflow writes to no run of it
                run_id, self.run_id = self.run_id, None
                raise deleted_experiment(self.tracking_uri, experiment.name, experiment.experiment_id, run_id)
            keys = sorted({k for epoch in trainer.history.epochs for k in epoch} | set(run.data.metrics))
            histories = {key: self.client.get_metric_history(self.run_id, key) for key in keys}
        if self._branches_off(run, trainer, histories):
            return False
        if run.info.status == "FINISHED" and getattr(trainer, "finished_training", False):
            # Resumed from the last checkpoint of a run that had ended: its record is complete,
            # and logging the report again would only duplicate every image and the model.
            self._complete = True
            return True
        with self._refused_by_store():  # the store's first write: a read-only one fails here
            self.client.update_run(self.run_id, status="RUNNING")
        try:
            with self._refused_by_store():
                self._restart_run(run, trainer, histories)
        except TrackingError as error:
            self._abandon_run(str(error))
            raise
        return True

    def _restart_run(self, run, trainer: Trainer, histories: Mapping[str, list]) -> None:
        """What a continued run logs before training: its settings, and the history its checkpoint
        holds that the store does not."""
        if "error" in run.data.tags:  # how it stopped last time; a FINISHED run must not keep it
            self.client.delete_tag(self.run_id, "error")
        self._fail_unfinished_models(run)
        if self._log_changed_settings(run.data.params, run.data.tags):
            from mlflow.exceptions import MlflowException

            try:
                self._log_config_in_effect(run)
            except (MlflowException, OSError) as exc:  # cosmetic: the run itself goes on
                self.outbox.warn(f"run {self.run_id}: the config in effect was not logged ({flat_message(exc)[:200]})")
        self._kernel_layer = first_conv_layer(trainer.model)
        for key, history in histories.items():
            self._logged.update((key, m.step) for m in history)
        self._log_missing_history(trainer)

    def _fail_unfinished_models(self, run) -> None:
        """Mark FAILED the logged models the run's killed process left PENDING (it died while
        logging its report): the Models tab listed them as models of the run, beside the one the
        continued run logs. A store or client without logged models (MLflow 2) has none to mark."""
        from mlflow.exceptions import MlflowException

        try:
            from mlflow.entities import LoggedModelStatus
        except ImportError:
            return
        try:
            models = self.client.search_logged_models([run.info.experiment_id],
                                                      filter_string=f"source_run_id = '{self.run_id}'")
            for model in models:
                if model.status == LoggedModelStatus.PENDING:
                    self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        except MlflowException:
            pass

    def _branches_off(self, run, trainer: Trainer, histories: Mapping[str, list]) -> bool:
        """Whether a run resumed from ``resume_file`` must be a new run, and if so make it one.

        Resumed from a point its run has gone past (the run logged later epochs, or a newer
        checkpoint of it lies beside the file), it trains another trajectory from there (with
        more epochs, another schedule). Continuing the run would keep the old trajectory's later
        steps, which are never logged twice, beside the new weights; and the two trajectories'
        checkpoints would resume the same run. ``trainer.resume=true`` never branches: it takes
        the newest checkpoint, or the one before a truncated newest, which replays what was logged.
        """
        if self.resume_file is None:
            return False
        newest = max((m.step for history in histories.values() for m in history), default=0)
        if newest > trainer.epoch:
            why = f"which has logged up to epoch {newest}"
        elif self.newer_checkpoint is not None:
            why = f"which went on to '{self.newer_checkpoint}'"
        else:
            return False
        self.branched = f"checkpoint '{self.resume_file}' is behind its MLflow run {run.info.run_id}, {why}"
        if RUN_KEY_TAG in self.tags:  # the old run's: a later resume must find this one
            self.tags[RUN_KEY_TAG] = uuid.uuid4().hex
        self._become_new_run(resumed_from=run.info.run_id)
        return True

    def _log_changed_settings(self, params: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        """Tag what this resumed run was started with where it differs from the params it
        logged first (only settings that ``trainer.resume`` lets change can differ); whether
        it differs, or did at an earlier resume."""
        return log_settings(self.client, self.run_id, flatten(self.config), params, tags,
                            unchanged=_RESUMING_SWITCHES)

    def _log_config_in_effect(self, run) -> None:
        """``config.yaml`` and the run's name say what the run goes on with (``trainer.epochs``
        raised, say), as a run started so would; the config it was started with is kept as
        ``config.initial.yaml`` (the params keep its values: MLflow never changes a param)."""
        logged = {item.path for item in self.client.list_artifacts(self.run_id)}
        if INITIAL_CONFIG not in logged and "config.yaml" in logged:
            # MLflow's bar for one small file would be the only progress bar of a resumed run
            # that is not its own, among the epoch lines of a terminal or a log.
            with no_artifacts_progress_bar(), tempfile.TemporaryDirectory() as tmp:
                first = Path(self.client.download_artifacts(self.run_id, "config.yaml", tmp)).read_text()
            self.client.log_text(self.run_id, first, INITIAL_CONFIG)
        self.client.log_text(self.run_id, self.config_yaml, "config.yaml")
        # A name given with tracking.run_name, or in the UI since, stays, unless the resumed
        # run gives another with tracking.run_name.
        still_automatic = run.info.run_name == run.data.tags.get(AUTOMATIC_NAME_TAG)
        if self.run_name and self.run_name != run.info.run_name and (self.name_chosen or still_automatic):
            self.client.update_run(self.run_id, name=self.run_name)
            if not self.name_chosen:
                self.client.set_tag(self.run_id, AUTOMATIC_NAME_TAG, self.run_name)

    def _log_missing_history(self, trainer: Trainer) -> None:
        """The epochs of ``trainer.history`` the store does not hold yet, in one batch."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        epochs = trainer.history.epochs
        missing = [Metric(k, float(v), timestamp, step)
                   for step, (epoch, best) in enumerate(zip(epochs, running_best(epochs, self.monitor)), 1)
                   for k, v in {**epoch, **best}.items() if (k, step) not in self._logged]
        for i in range(0, len(missing), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=missing[i:i + _MAX_METRICS_PER_BATCH])
        self._logged.update((m.key, m.step) for m in missing)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        timestamp = int(time.time() * 1000)
        best = (running_best(trainer.history.epochs, self.monitor) or [{}])[-1]
        # An epoch trained again after a resume from an older checkpoint (every_n_epochs > 1, a
        # truncated newest one) was logged before: its figures are not sent twice, nor its kernels.
        replayed = all((k, epoch) in self._logged for k in metrics)
        fresh = {k: float(v) for k, v in {**metrics, **best}.items() if (k, epoch) not in self._logged}
        if fresh:
            self._send_metrics([(k, v, timestamp, epoch) for k, v in fresh.items()])
        if not replayed:
            self._log_kernels(trainer, step=epoch)

    def on_fit_end(self, trainer: Trainer, test_metrics: dict[str, float]) -> None:
        if self._complete:
            return
        timestamp = int(time.time() * 1000)
        final = [(k, float(v), timestamp, trainer.epoch) for k, v in test_metrics.items()
                 if (k, trainer.epoch) not in self._logged]
        if final:
            self._send_metrics(final)
        for key, value in early_stopping_tags(getattr(trainer, "early_stop", None)).items():
            self._submit_tag(key, value)
        if self.log_weights:
            weights = trainer.model.state_dict()
            # What names the outputs, beside the weights: without it `cnnx predict --run` rebuilt
            # the classes from the dataset as it is later, and a renamed class folder relabelled
            # every prediction.
            from cnnx.inference import trained_classifier

            description = (None if trainer.data is None else
                           trained_classifier(trainer.model, self.config, trainer.data).description())
            self.outbox.submit(Pending(lambda: self._log_weights(weights, description),
                                       {"kind": "weights", "run_id": self.run_id, "description": description},
                                       {f"weights.{k}": v for k, v in weights.items()}))
        if self.log_model or self.log_plots:
            self._log_report(trainer)
        self._submit_status("FINISHED")
        self._finish()
        if "mlflow.parentRunId" not in self.tags:  # a sweep names its parent, which lists its jobs
            # What `cnnx predict --run`, `mlflow models serve` and the UI's search need.
            model = f"; model: runs:/{self.run_id}/model" if self.log_model else ""
            report(f"cnnx: run {self.run_id} in experiment {self.experiment_name!r} at "
                   f"{absolute_store_uri(self.tracking_uri)}{model}", logging.INFO)

    def _log_report(self, trainer: Trainer) -> None:
        """Plots and the servable model, sent directly: too large to queue through an outage,
        so during one they wait (``flush_timeout``, as the queue would) for the store first."""
        from mlflow.exceptions import MlflowException

        from cnnx.tracking.run_report import log_run_report

        if self.outbox.pending and not self.outbox.drain(self.flush_timeout):
            self.outbox.warn(f"plots and model of run {self.run_id} not logged: store {self.tracking_uri} still "
                             f"unreachable after {self.flush_timeout:.0f} s (tracking.flush_timeout)")
            return
        try:
            log_run_report(self.client, self.run_id, trainer, self.config,
                           model=self.log_model, plots=self.log_plots,
                           kernels_logged=self._kernel_layer if self.log_kernels else None)
        except (MlflowException, OSError) as exc:
            reason = flat_message(exc)[:200]
            self.outbox.warn(f"plots and model of run {self.run_id} not logged: store unreachable ({reason})")

    def on_fit_error(self, trainer: Trainer, error: BaseException) -> None:
        self.finish_with_error(ending_status(error), f"{type(error).__name__}: {error}")

    def finish_with_error(self, status: str, message: str) -> None:
        """End the run ``status`` (FAILED or KILLED), ``message`` in its ``error`` tag."""
        if self.client is None or self.run_id is None or self._complete:
            return
        self._submit_tag("error", message[:_MAX_PARAM_LENGTH])
        self._submit_status(status)
        # The original error matters more than the status: wait less than at a normal end.
        self._finish(timeout=min(self.flush_timeout, 10.0))

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": absolute_store_uri(self.tracking_uri)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")
        self.logged_to = state.get("tracking_uri")
        if state.get("run_key"):
            self.tags[RUN_KEY_TAG] = state["run_key"]
            self.resuming = True

    # -- delivery --------------------------------------------------------------------------
    def _send_metrics(self, rows: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        run_id = self.run_id
        batch = [Metric(*row) for row in rows]
        self.outbox.submit(Pending(lambda: self.client.log_batch(run_id, metrics=batch),
                                   {"kind": "metrics", "run_id": run_id, "metrics": [list(r) for r in rows]}))
        self._logged.update((row[0], row[3]) for row in rows)

    def _submit_tag(self, key: str, value: str) -> None:
        run_id = self.run_id
        self.outbox.submit(Pending(lambda: self.client.set_tag(run_id, key, value),
                                   {"kind": "tag", "run_id": run_id, "key": key, "value": value}))

    def _submit_status(self, status: str) -> None:
        run_id = self.run_id
        self.outbox.submit(Pending(lambda: end_run(self.client, run_id, status),
                                   {"kind": "status", "run_id": run_id, "status": status}))

    def _log_weights(self, weights: dict[str, np.ndarray], description: dict[str, Any] | None) -> None:
        log_weights(self.client, self.run_id, weights, description)

    def _finish(self, timeout: float | None = None) -> None:
        if self.outbox.drain(self.flush_timeout if timeout is None else timeout):
            return
        count = len(self.outbox.pending)
        path = self.outbox.spill(self.spill_dir)
        self.outbox.warn(
            f"MLflow store {self.tracking_uri} still unreachable: {count} tracking calls of run "
            f"{self.run_id} saved to {path}; send them later with: python -m cnnx.tracking.outbox "
            f"{self.spill_dir} --tracking-uri {self.tracking_uri}"
        )

    # -- images ----------------------------------------------------------------------------
    def _log_kernels(self, trainer: Trainer, step: int) -> None:
        if not self.log_kernels or self._kernel_layer is None:
            return
        weight = dict(trainer.model.named_parameters())[f"{self._kernel_layer}.weight"].data
        image, key, run_id = kernel_grid(weight), f"kernels/{self._kernel_layer}", self.run_id
        # synchronous: async image logging adds about a second at the end of every run.
        self.outbox.submit(Pending(
            lambda: self.client.log_image(run_id, image, key=key, step=step, synchronous=True),
            {"kind": "image", "run_id": run_id, "key": key, "step": step}, {"image": image}))


def early_stopping_tags(stop: Mapping[str, Any] | None) -> dict[str, str]:
    """``cnnx.early_stopping.*`` tags of a run that early stopping ended (``Trainer.early_stop``):
    the epoch it stopped after, its best epoch, and whether the model (the logged one, the
    test metrics') has that epoch's weights (``trainer.early_stopping.restore_best``)."""
    if not stop:
        return {}
    return {f"{EARLY_STOPPING_TAG}stopped_epoch": str(stop["stopped_epoch"]),
            f"{EARLY_STOPPING_TAG}best_epoch": str(stop["best_epoch"]),
            f"{EARLY_STOPPING_TAG}restored_best": str(bool(stop["restored_best"])).lower()}


def first_conv_layer(model) -> str | None:
    return next(iter(conv_layers(model)), None)
