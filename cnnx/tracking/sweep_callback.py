"""One parent MLflow run per multirun, its jobs' runs as children, a summary at the end.

A Hydra callback (``hydra.callbacks`` in conf/config.yaml) that acts only on multiruns:
before any job starts it sets up the store once (schema, experiment) and creates the parent
run (or, resuming, takes the earlier one over unless that sweep still runs), then leaves a
``SweepLink`` in the sweep directory for the jobs. When the sweep ends it records the best
child, the comparison CSV and plot on the parent. A sweep that stops early
(a failed job, Ctrl-C) still gets its summary and leaves the parent FAILED, never RUNNING.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cnnx import sweep_signals
from cnnx.override_text import override_key
from cnnx.tracking.sqlite_store import absolute_store_uri, create_store_atomically, sqlite_path
from cnnx.tracking.sweep_link import SweepDirTaken, SweepLink, sweep_dir_of
from cnnx.tracking.sweep_owner import driver_tags, still_running
from cnnx.tracking.sweep_resume import SIGNATURE_TAG, earlier_parent
from cnnx.tracking.sweep_summary import (
    ERROR_TAG, OBJECTIVE_TAG, ROLE_TAG, SWEPT_TAG, last_epoch_note, record_summary, swept_keys_of_command,
    sweep_table,
)

OPTUNA_RESULTS = "optimization_results.yaml"


def _ended(other: SweepLink) -> bool:
    """Whether the sweep of another link has ended, so that its sweep dir may be taken over (a
    pinned hydra.sweep.dir, used again)."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(other.tracking_uri)
        return still_running(client, client.get_run(other.parent_run_id)) is None
    except Exception:  # noqa: BLE001 — its store or run is gone: no job of it can read the link
        return True


def sweep_signature(config: DictConfig, experiment_name: str) -> str:
    """Identifies "the same multirun command": its overrides and search space, not how it
    resumes nor where it logs (the store is found through ``tracking.uri`` or
    ``MLFLOW_TRACKING_URI``), nor the order in which a list of values is given."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    kept = [o for o in config.hydra.overrides.task if not override_key(o).startswith(("sweep.", "tracking."))]
    overrides = sorted(_canonical(o) for o in OverridesParser.create().parse_overrides(kept))
    text = json.dumps([experiment_name, overrides, search_space(config) or {}], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _canonical(parsed) -> str:
    """``lr=0.1,0.01`` → ``lr=0.01,0.1``: a list sweep as the set of jobs it makes."""
    if not parsed.is_choice_sweep() or parsed.value().shuffle:
        return parsed.input_line
    values = sorted(parsed.sweep_string_iterator())
    return f"{parsed.get_key_element()}={','.join(values)}"


def search_space(config: DictConfig) -> dict | None:
    """The sweeper's search space (Optuna's ``params``), unresolved; None for Hydra's basic sweeper."""
    sweeper = OmegaConf.select(config, "hydra.sweeper")
    return None if sweeper is None else OmegaConf.to_container(sweeper, resolve=False).get("params")


def sweep_store(config: DictConfig) -> tuple[str, str, str]:
    """Where this multirun logs (the store's absolute URI, the experiment's name), and its signature."""
    from cnnx.tracking.mlflow_tracker import resolve_tracking_uri

    uri = absolute_store_uri(resolve_tracking_uri(config.tracking.uri), Path(config.hydra.runtime.cwd))
    experiment_name = config.tracking.experiment_name or config.experiment_name
    return uri, experiment_name, sweep_signature(config, experiment_name)


def resumable_parent(config: DictConfig):
    """The parent run ``sweep.resume=true`` would continue, or None; looked up before the sweep
    starts, so a store or experiment that does not exist yet is not created."""
    from mlflow import MlflowClient

    from cnnx.tracking.mlflow_tracker import use_short_http_retries

    uri, experiment_name, signature = sweep_store(config)
    store_file = sqlite_path(uri)
    if store_file is not None and not store_file.exists():
        return None
    use_short_http_retries(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    return None if experiment is None else earlier_parent(client, experiment.experiment_id, signature)


def _choice(config: DictConfig, group: str) -> str:
    return str(config.hydra.runtime.choices.get(group, "?"))


class MlflowSweepCallback(Callback):
    # Only small picklable state: Hydra pickles callbacks into joblib and submitit workers.
    def __init__(self) -> None:
        self._link: SweepLink | None = None
        self._objective = "val_acc"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled:
            return
        from mlflow import MlflowClient
        from mlflow.entities import RunTag

        from cnnx.app import short_overrides
        from cnnx.cli import EXIT_USAGE
        from cnnx.tracking.mlflow_tracker import unusable_store, use_short_http_retries
        from cnnx.tracking.tags import run_tags

        from cnnx.tracking.mlflow_tracker import TrackingError, resolve_tracking_uri, run_store_setting
        from cnnx.tracking.store_check import check_store_uri

        cwd = Path(config.hydra.runtime.cwd)
        given = resolve_tracking_uri(config.tracking.uri)
        try:
            # As typed: made absolute, sqlite:/// becomes the working directory.
            check_store_uri(given, run_store_setting(given))
        except TrackingError as error:
            print(f"cnnx: error: {error}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from error
        uri, experiment_name, signature = sweep_store(config)
        self._objective = config.trainer.monitor
        swept_keys = swept_keys_of_command(list(config.hydra.overrides.task), search_space(config))
        swept = json.dumps(swept_keys)
        use_short_http_retries(uri)
        try:
            # Creating the client, the experiment and the parent here, once, before any job
            # starts, is what keeps parallel jobs from racing to build the schema or experiment.
            store_file = sqlite_path(uri)
            new_store = store_file is not None and not store_file.exists()
            create_store_atomically(uri)
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name(experiment_name)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else client.create_experiment(experiment_name))
            parent = earlier_parent(client, experiment_id, signature) if config.sweep.resume else None
            running = parent is not None and still_running(client, parent)
            if running:
                print(f"cnnx: error: {running}", file=sys.stderr)
                raise SystemExit(EXIT_USAGE)
            if parent is not None:
                client.update_run(parent.info.run_id, status="RUNNING")
                # A parent logged before the swept-keys tag gets it; the driver tags now name this
                # process, for the next resume to check.
                client.log_batch(parent.info.run_id, tags=[
                    RunTag(key, value) for key, value in {SWEPT_TAG: swept, **driver_tags()}.items()])
                print(f"cnnx: resuming sweep {parent.info.run_name!r} (parent run {parent.info.run_id})",
                      file=sys.stderr)
            else:
                if config.sweep.resume:
                    # A sweep stopped before its first job left nothing (its parent went to the
                    # trash). A store that did not exist is named: its path may be mistyped.
                    where = f"the new store {uri}" if new_store else f"experiment {experiment_name!r}"
                    print(f"cnnx: sweep.resume=true found no earlier run of this sweep with jobs in "
                          f"{where}; starting it", file=sys.stderr)
                overrides = short_overrides(list(config.hydra.overrides.task), keep_presets=True)
                tags = {**run_tags(cwd), ROLE_TAG: "parent", SIGNATURE_TAG: signature,
                        OBJECTIVE_TAG: self._objective, SWEPT_TAG: swept, **driver_tags(),
                        "cnnx.sweep.dir": str(sweep_dir_of(config.hydra)),
                        "cnnx.sweep.launcher": _choice(config, "hydra/launcher"),
                        "cnnx.sweep.sweeper": _choice(config, "hydra/sweeper"),
                        "cnnx.sweep.command": " ".join(config.hydra.overrides.task)}
                parent = client.create_run(experiment_id, run_name="sweep " + " ".join(overrides), tags=tags)
        except Exception as exc:
            error = unusable_store(uri, exc)
            # Hydra turns a callback's exception into a warning and would start every job anyway.
            print(f"cnnx: error: {error}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from exc
        self._link = SweepLink(uri, experiment_id, parent.info.run_id, experiment_name, tuple(swept_keys))
        atexit.register(self._close, "FAILED")
        sweep_dir = sweep_dir_of(config.hydra)
        try:
            self._link.write(sweep_dir, replaceable=_ended)
        except SweepDirTaken as taken:
            print(f"cnnx: error: hydra.sweep.dir {str(sweep_dir)!r} belongs to another sweep, still running (parent "
                  f"run {taken.other.parent_run_id}); sweeps started in the same second share Hydra's default sweep "
                  f"dir: set hydra.sweep.dir, or start this one a second later", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except OSError as exc:
            print(f"cnnx: error: cannot write the sweep's {exc.filename or 'directory'} "
                  f"(hydra.sweep.dir): {exc.strerror}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from exc
        print(f"cnnx: sweep parent run {parent.info.run_id} in experiment {experiment_name!r} at {uri}",
              file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._link is None:
            return
        optuna_results = sweep_dir_of(config.hydra) / OPTUNA_RESULTS
        if optuna_results.exists():
            from mlflow import MlflowClient

            MlflowClient(self._link.tracking_uri).log_artifact(self._link.parent_run_id, str(optuna_results))
        self._close("FINISHED")

    def _close(self, status: str) -> None:
        """Summarise whatever children exist and end the parent, once."""
        link, self._link = self._link, None
        if link is None:
            return
        from mlflow import MlflowClient

        from cnnx.tracking.mlflow_tracker import end_run

        client = MlflowClient(link.tracking_uri)
        table = None
        try:
            table = sweep_table(client, link.parent_run_id, self._objective)
            if status == "FAILED":
                # Ctrl-C on a parallel sweep: the launcher stops its workers, sometimes before a
                # job has ended its own run. A job still running elsewhere (SLURM) ends its run
                # itself later, which overrides this status. Before the summary, so that its
                # table shows what the store will say.
                for row in table.rows:
                    if row["status"] == "RUNNING":
                        end_run(client, row["run_id"], "KILLED")
                        row["status"] = "KILLED"
            if table.rows or status == "FINISHED":
                best = record_summary(client, link.parent_run_id, table)
                if best is not None:
                    # Only FINISHED runs compete; a resumed sweep also holds the runs it stopped.
                    finished = sum(row["status"] == "FINISHED" for row in table.rows)
                    others = len(table.rows) - finished
                    print(f"cnnx: best of {finished} finished run{'s' if finished != 1 else ''}"
                          f"{f' ({others} more stopped or failed)' if others else ''}: {best['run_name']} "
                          f"{table.objective_column}={best[table.objective_column]:.4f} (run {best['run_id']})",
                          file=sys.stderr)
                    note = last_epoch_note(client, best["run_id"], best["run_name"], table.objective)
                    if note is not None:
                        print(note, file=sys.stderr)
                elif not sweep_signals.sweep_stopped and any(row["status"] == "FAILED" for row in table.rows):
                    # Else the console showed the first failure's error alone, and nothing of the rest.
                    # (A sweep stopped by a signal has said how to go on: that stays its last line.)
                    counts = Counter(row["status"].lower() for row in table.rows)
                    print(f"cnnx: no run of the sweep finished ({', '.join(f'{n} {s}' for s, n in counts.items())}: "
                          f"{', '.join(repr(row['run_name']) for row in table.rows)}); each FAILED run's reason is its "
                          f"tag error (tag {ERROR_TAG} when it failed before training)", file=sys.stderr)
        finally:
            end_run(client, link.parent_run_id, status)
            # A sweep that failed before any job (a mistyped override) leaves nothing to compare:
            # its parent goes to MLflow's trash rather than cluttering the experiment.
            if table is not None and not table.rows and status == "FAILED":
                client.delete_run(link.parent_run_id)
