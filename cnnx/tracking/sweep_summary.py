"""A sweep's comparison table: one row per child run, its swept params and its objective.

``sweep_table`` reads the children of a parent run from any MLflow store; the multirun
callback records it on the parent (best child, CSV, plot), and other tools can print it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnx.override_text import override_key, override_key_value
from cnnx.tracking.batched import log_params
from cnnx.training.objective import objective_mode, train_twin

#: Tags the sweep callback puts on a parent run.
ROLE_TAG = "cnnx.sweep.role"
OBJECTIVE_TAG = "cnnx.sweep.objective"
BEST_RUN_TAG = "cnnx.sweep.best_run_id"
BEST_NAME_TAG = "cnnx.sweep.best_run_name"
BEST_PARAMS_TAG = "cnnx.sweep.best_params"
#: ``models:/<model_id>`` of the best child's logged model: what to register or serve.
BEST_MODEL_TAG = "cnnx.sweep.best_model_uri"
#: On a parent: the keys its command sweeps (JSON list), its columns in every comparison.
SWEPT_TAG = "cnnx.sweep.swept"
#: On every run: its command-line overrides (JSON list), where a swept config group's or
#: preset's choice (``optimizer=adam``), which is no param, is read back.
OVERRIDES_TAG = "cnnx.overrides"
#: A setting a resumed run changed (``trainer.epochs``, say): MLflow keeps a param's first
#: value for good, so the value the run went on with is this tag plus the param's name.
RESUMED_WITH_TAG = "cnnx.resumed_with."
#: On a sweep job's FAILED run when it failed before training: its error, in one line.
ERROR_TAG = "cnnx.error"
#: Below MLflow's limit on a tag's value (8000 characters in 3.x, 5000 in older versions).
MAX_TAG_LENGTH = 5000
REPORTED_METRICS = ("test_acc", "test_loss")
#: Where runs were logged, how they were named, whether a sweep resumed and whether progress
#: bars were drawn are not choices, nor what follows from the data (``data.train_size``
#: changes with ``dataset.val_fraction``).
_NOT_SWEPT = ("tracking.", "sweep.", "data.", "trainer.progress")


def objective_metric(runs: list, monitor: str) -> str:
    """The metric a table of ``runs`` ranks by and names: ``monitor``, or its train twin when no
    run has a validation split, as those runs log it (``best_train_acc``)."""
    twin = train_twin(monitor)
    if any(monitor in run.data.metrics for run in runs) or not any(twin in run.data.metrics for run in runs):
        return monitor
    return twin


def run_objective(client, run, monitor: str, twin: bool = True) -> float | None:
    """The best epoch's ``monitor`` of a run (its train twin when there is no validation split,
    unless ``twin`` is False: a table ranking by ``val_acc`` would rank a run without a validation
    split by its optimistic train accuracy under that name)."""
    for key in (monitor, train_twin(monitor)) if twin else (monitor,):
        if key in run.data.metrics:
            values = [m.value for m in client.get_metric_history(run.info.run_id, key)
                      if not math.isnan(m.value)]
            if values:
                return max(values) if objective_mode(key) == "max" else min(values)
    return None


def child_runs(client, parent_run_id: str) -> list:
    """The children of the parent, in any experiment of the store, oldest first; an attempt that
    a resumed sweep ran again is left out (see ``superseded``)."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                                  max_results=1000, order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            hidden = superseded(runs)
            return [run for run in runs if run.info.run_id not in hidden]


def superseded(runs: list) -> set[str]:
    """Ids of the runs that did not finish and that a later or a FINISHED run of the same job
    replaced: a job stopped before its first checkpoint, or one that failed before training,
    starts a new run when its sweep resumes. The same job: the same config fingerprint, or the same overrides
    (a job that failed before training has no fingerprint). FINISHED runs always count: Optuna
    may draw the same trial twice."""
    from cnnx.tracking.sweep_resume import FINGERPRINT_TAG

    def identities(run) -> list[str]:
        fingerprint, overrides = run.data.tags.get(FINGERPRINT_TAG), run.data.tags.get(OVERRIDES_TAG)
        found = [f"fingerprint {fingerprint}"] if fingerprint else []
        # Without how the sweep resumed and where it logged: a rerun adds sweep.resume=true.
        if overrides:
            kept = sorted(o for o in json.loads(overrides) if not override_key(o).startswith(("sweep.", "tracking.")))
            found.append(f"overrides {kept}")
        return found

    def finished_in_its_sweep(run, identity: str) -> bool:
        parent = run.data.tags.get("mlflow.parentRunId")
        return parent is not None and (parent, identity) in finished

    newest: dict[str, int] = {}
    finished: set[tuple[str, str]] = set()
    for run in runs:
        for identity in identities(run):
            newest[identity] = max(newest.get(identity, 0), run.info.start_time)
            if run.info.status == "FINISHED" and "mlflow.parentRunId" in run.data.tags:
                finished.add((run.data.tags["mlflow.parentRunId"], identity))
    # A sweep's job that finished replaces its other attempts in that sweep, also newer ones: a
    # resumed run keeps its first start time, so an attempt refused meanwhile would otherwise
    # count as the later one. (Runs outside a sweep are separate runs: the same command run
    # again while the first finished shows.)
    return {run.info.run_id for run in runs if run.info.status != "FINISHED"
            and any(newest[identity] > run.info.start_time or finished_in_its_sweep(run, identity)
                    for identity in identities(run))}


def last_epoch_note(client, run_id: str, run_name: str, metric: str) -> str | None:
    """A note when a run's logged model and test figures, its last epoch's weights, score far
    below (by a tenth) the best epoch it is ranked by: a run that peaked, then collapsed, is a
    sweep's best by its peak while its model is the collapsed one. None when the weights are the
    best epoch's (early stopping restored them) or close to it."""
    run = client.get_run(run_id)
    if run.data.tags.get("cnnx.early_stopping.restored_best") == "true":
        return None
    history = sorted((m for m in client.get_metric_history(run_id, metric) if not math.isnan(m.value)),
                     key=lambda m: m.step)
    if not history:
        return None
    pick = max if objective_mode(metric) == "max" else min
    best, last = pick(history, key=lambda m: m.value), history[-1]
    if abs(best.value - last.value) <= 0.1 * abs(best.value):
        return None
    return (f"cnnx: note: {run_name!r} ranks by its epoch {best.step} ({metric}={best.value:.4f}), but its logged "
            f"model and test figures are its last epoch's (epoch {last.step}, {metric}={last.value:.4f}); "
            f"{_best_weights_advice(run.data.params)}")


def _best_weights_advice(params: Mapping[str, str]) -> str:
    """How the run would have handed back its best epoch's weights, given its early stopping."""
    key = "trainer.early_stopping."
    if params.get(key + "enabled") != "True":
        return f"{key}enabled=true hands back the best epoch's weights when it stops a run"
    if params.get(key + "restore_best") != "True":
        return f"{key}restore_best=true hands back the best epoch's weights when early stopping stops a run"
    patience = params.get(key + "patience", "?")
    return (f"early stopping hands them back only when it stops the run, after {patience} epochs without "
            f"improvement ({key}patience)")


def overrides_tag(overrides: list[str]) -> dict[str, str]:
    """The ``OVERRIDES_TAG`` of a run; none when the overrides would not fit in a tag (the run's
    params still hold every value)."""
    text = json.dumps(overrides)
    return {OVERRIDES_TAG: text} if len(text) <= MAX_TAG_LENGTH else {}


def swept_keys_of_command(overrides: list[str], search_space: dict | None) -> list[str]:
    """The keys a multirun varies: its sweep overrides, then its sweeper's search space."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]
    return keys + [k for k in search_space or {} if k not in keys]


def swept_columns(runs: list, parent=None) -> list[str]:
    """The columns that tell ``runs`` apart: the keys their parent's command swept, or (runs
    of no sweep, or of one logged before parents recorded it) the params that differ."""
    if parent is not None and SWEPT_TAG in parent.data.tags:
        return json.loads(parent.data.tags[SWEPT_TAG])
    keys = sorted({k for run in runs for k in run.data.params if not k.startswith(_NOT_SWEPT)})
    # A run without the param (refused before it logged any) tells nothing about it.
    return [k for k in keys if len({swept_value(run, k) for run in runs if k in run.data.params}) > 1]


def shared_settings(runs: list, swept: list[str]) -> dict[str, str]:
    """The params all ``runs`` logged with one value, but for the swept keys (and the keys of a
    swept group, ``optimizer.*`` for ``optimizer=adam,sgd``) and what is no choice (``_NOT_SWEPT``):
    what makes ``params.model.name = 'lenet5'`` find a sweep's parent as well as its children."""
    # The values runs went on with: a resumed run's changes are tags beside its first params.
    logged = [{**run.data.params, **resumed_with(run)} for run in runs if run.data.params]  # a refused job logged none
    if not logged:
        return {}
    return {key: value for key, value in logged[0].items()
            if all(params.get(key) == value for params in logged[1:]) and not key.startswith(_NOT_SWEPT)
            and not any(key == k or key.startswith(k + ".") for k in swept)}


def resumed_with(run) -> dict[str, str]:
    """The settings a resumed run changed, by param name, with the values it went on with."""
    return {key[len(RESUMED_WITH_TAG):]: value for key, value in run.data.tags.items()
            if key.startswith(RESUMED_WITH_TAG)}


def log_settings(client, run_id: str, settings: Mapping[str, str], params: Mapping[str, str],
                 tags: Mapping[str, str], unchanged: Collection[str] = ()) -> bool:
    """Log ``settings`` on a run that already holds ``params`` and ``tags``: new keys as params,
    a value that differs from its param (MLflow keeps a param's first value) as a
    ``cnnx.resumed_with.<key>`` tag, and a tag whose key is back at its param's value deleted.
    Keys in ``unchanged`` are never tagged. Whether any setting differs now or did before."""
    from mlflow.entities import Param, RunTag

    changed = [RunTag(RESUMED_WITH_TAG + key, value) for key, value in settings.items()
               if key in params and params[key] != value and key not in unchanged]
    log_params(client, run_id, [Param(key, value) for key, value in settings.items() if key not in params], changed)
    for tag in tags:
        key = tag[len(RESUMED_WITH_TAG):]
        if tag.startswith(RESUMED_WITH_TAG) and key in settings and settings[key] == params.get(key):
            client.delete_tag(run_id, tag)
    return bool(changed) or any(tag.startswith(RESUMED_WITH_TAG) for tag in tags)


def swept_value(run, key: str) -> str | None:
    """The run's value of a swept key: the value it was resumed with, its param, or its
    override of a group or preset."""
    changed = resumed_with(run)
    if key in changed:
        return changed[key]
    if key in run.data.params:
        return run.data.params[key]
    for override in json.loads(run.data.tags.get(OVERRIDES_TAG, "[]")):
        name, value = override_key_value(override)
        if name == key:
            return value
    return None


@dataclass
class SweepTable:
    objective: str
    mode: str
    swept: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: The settings every run shares (``shared_settings``).
    fixed: dict[str, str] = field(default_factory=dict)

    @property
    def objective_column(self) -> str:
        return f"best_{self.objective}"

    @property
    def columns(self) -> list[str]:
        extra = [m for m in REPORTED_METRICS if any(m in row for row in self.rows)]
        return ["rank", "run_id", "run_name", "status", *self.swept, self.objective_column, *extra]

    def ranked(self) -> list[dict[str, Any]]:
        """The rows best first by the objective, each with its ``rank``: finished runs first (a
        stopped or failed run's figure is of a run cut short), then the others, then rows without
        a value (stopped before their first epoch, refused). Ties keep the order the runs started in."""
        column, sign = self.objective_column, -1.0 if self.mode == "max" else 1.0
        rows = sorted(self.rows, key=lambda r: (r[column] is None, r["status"] != "FINISHED", sign * (r[column] or 0.0)))
        return [{"rank": i, **row} for i, row in enumerate(rows, 1)]

    def best(self) -> dict[str, Any] | None:
        """The first ranked row, when it is a finished run's: what the parent names as best."""
        first = next(iter(self.ranked()), None)
        if first is None or first["status"] != "FINISHED" or first[self.objective_column] is None:
            return None
        return {key: value for key, value in first.items() if key != "rank"}

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.ranked())
        return out.getvalue()


def sweep_table(client, parent_run_id: str, monitor: str | None = None) -> SweepTable:
    """The comparison table of a sweep; ``monitor`` defaults to the objective tagged on the parent."""
    parent = client.get_run(parent_run_id)
    if monitor is None:
        monitor = parent.data.tags.get(OBJECTIVE_TAG, "val_acc")
    return runs_table(client, child_runs(client, parent_run_id), monitor, parent)


def runs_table(client, runs: list, monitor: str, parent=None) -> SweepTable:
    """The comparison table of any ``runs`` (a sweep's children, an experiment's runs), in the
    order given; ``parent``, when they are a sweep's, names the keys it swept."""
    metric = objective_metric(runs, monitor)
    swept = swept_columns(runs, parent)
    table = SweepTable(objective=metric, mode=objective_mode(metric), swept=swept, fixed=shared_settings(runs, swept))
    for run in runs:
        row = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
               **{k: swept_value(run, k) for k in swept},
               table.objective_column: run_objective(client, run, metric, twin=False)}
        row.update({m: run.data.metrics[m] for m in REPORTED_METRICS if m in run.data.metrics})
        table.rows.append(row)
    return table


def objective_figure(table: SweepTable):
    """Objective against each swept param, one panel per param; the best child is marked."""
    from cnnx.tracking.plots import new_figure

    column = table.objective_column
    scored = [r for r in table.rows if r[column] is not None]
    best = table.best()
    panels = table.swept or ["run_name"]
    fig = new_figure(3.6 * len(panels), 3.2)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, key in zip(axes[0], panels):
        raw = [r[key] for r in scored]
        try:
            xs = [float(v) for v in raw]
            numeric = True
        except (TypeError, ValueError):
            categories = sorted(set(map(str, raw)))
            xs = [categories.index(str(v)) for v in raw]
            numeric = False
        ax.scatter(xs, [r[column] for r in scored], color="tab:blue")
        if best is not None:
            i = scored.index(best)
            ax.scatter([xs[i]], [best[column]], color="tab:red", marker="*", s=160, label="best")
            ax.legend(loc="best", fontsize=8)
        if numeric:
            _numeric_x_axis(ax, xs)
        else:
            ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(key, fontsize=9)
        ax.set_ylabel(column, fontsize=9)
        ax.grid(alpha=0.3)
    unscored = len(table.rows) - len(scored)  # stopped before their first epoch, or refused
    fig.suptitle(f"{len(scored)} runs{f' ({unscored} more without {column})' if unscored else ''}, "
                 f"objective {column} ({table.mode})", fontsize=10)
    fig.tight_layout()
    return fig


def _numeric_x_axis(ax, values: list[float]) -> None:
    """A log scale where the values span a decade or more, as a learning rate searched by
    orders of magnitude does (linear, all but the largest would bunch at one end); whole-number
    ticks for whole-number params (channels, batch sizes), which take no value in between."""
    from matplotlib.ticker import MaxNLocator

    if not values:  # none scored (every job stopped before its first epoch): nothing to scale
        return
    if min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_xscale("log")
    elif all(v.is_integer() for v in values):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def record_summary(client, parent_run_id: str, table: SweepTable) -> dict[str, Any] | None:
    """Best child (tags + metrics), the settings its children share (params), ``comparison.csv``
    and ``comparison.png`` on the parent run."""
    from mlflow.entities import Metric, RunTag

    best = table.best()
    client.log_text(parent_run_id, table.to_csv(), "comparison.csv")
    if table.rows:
        client.log_figure(parent_run_id, objective_figure(table), "comparison.png")
    _log_new_params(client, parent_run_id, table.fixed)
    if best is None:
        return None
    params = {k: best[k] for k in table.swept}
    model_uri = logged_model_uri(client, best["run_id"])
    # Tags and metrics, not params: a resumed sweep may find a new best and must update them.
    tags = [RunTag(BEST_RUN_TAG, best["run_id"]), RunTag(BEST_NAME_TAG, best["run_name"]),
            RunTag(BEST_PARAMS_TAG, json.dumps(params, sort_keys=True))]
    if model_uri is not None:
        tags.append(RunTag(BEST_MODEL_TAG, model_uri))
    # Beside the objective, what the best child scored on the test split, when it got there.
    figures = {table.objective_column: best[table.objective_column],
               **{f"best_{m}": best[m] for m in REPORTED_METRICS if best.get(m) is not None}}
    now = _now_ms()
    client.log_batch(parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in figures.items()], tags=tags)
    if model_uri is None:  # nor may an earlier best's model stay named
        _delete_tag_if_set(client, parent_run_id, BEST_MODEL_TAG)
    client.log_dict(parent_run_id, {"run_id": best["run_id"], "run_name": best["run_name"],
                                    "objective": table.objective, table.objective_column: best[table.objective_column],
                                    "params": params, "model_uri": model_uri}, "best_child.json")
    return best


def _log_new_params(client, run_id: str, params: dict[str, str]) -> None:
    """Logs the params the run does not have yet. A resumed sweep summarises into the parent
    it had, which holds an earlier summary's values: MLflow refuses a param's second value, so
    one that differs now (its children went on with another trainer.epochs) is tagged
    ``cnnx.resumed_with.<key>`` beside it, as a resumed run's are."""
    run = client.get_run(run_id)
    log_settings(client, run_id, params, run.data.params, run.data.tags)


def logged_model_uri(client, run_id: str) -> str | None:
    """``models:/<model_id>`` of the run's newest logged model; None when it logged none
    (``tracking.log_model=false``, or MLflow 2, which has no logged models)."""
    outputs = getattr(client.get_run(run_id), "outputs", None)
    models = outputs.model_outputs if outputs is not None else []
    return f"models:/{max(models, key=lambda output: output.step).model_id}" if models else None


def _delete_tag_if_set(client, run_id: str, key: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_tag(run_id, key)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
