"""`python -m cnnx.compare` / `cnnx compare`: the runs of an experiment or a sweep, best first.

For people who live in the terminal or on a cluster without a browser: one row per run with
the params that differ between the runs (what was swept), the objective (the best epoch's
``trainer.monitor``, as the sweeper sees it) and the test metrics; the same table is written
as CSV.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import re
import sys
from pathlib import Path
from typing import Any

from cnnx.cache_dir import write_atomically
from cnnx.cli import report_user_errors
from cnnx.errors import CnnxError, ConfigError
from cnnx.tracking.sweep_summary import (
    OBJECTIVE_TAG, ROLE_TAG, child_runs, objective_metric, objective_mode, runs_table, superseded,
)
from cnnx.training.objective import train_twin

PARENT_TAG = "mlflow.parentRunId"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class CompareError(CnnxError):
    """The experiment or parent run to compare does not exist or has no runs."""


def _search(client, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, "", max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_runs(client, target: str) -> tuple[str, list, Any]:
    """``(description, runs, parent run or None)`` for a parent run id or an experiment."""
    from mlflow.exceptions import MlflowException

    if _RUN_ID.match(target):
        try:
            parent = client.get_run(target)
        except MlflowException:
            parent = None
        if parent is not None:
            if parent.info.lifecycle_stage == "deleted":
                raise CompareError(f"run {target} is deleted (in MLflow's trash: a sweep stopped before "
                                   f"its first job leaves its parent there)")
            children = child_runs(client, target)
            if not children:
                raise CompareError(f"run {target} has no child runs; pass a sweep's parent run id "
                                   f"or an experiment name")
            return f"children of run {target}", children, parent
    experiment = client.get_experiment_by_name(target)
    if experiment is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise CompareError(f"no experiment or run named {target!r}; experiments in this store: {names}")
    runs = _search(client, [experiment.experiment_id])
    parents = {r.data.tags.get(PARENT_TAG) for r in runs}
    # A sweep's parent summarises its children; listing it among them would count it twice.
    trained = [r for r in runs if r.info.run_id not in parents and ROLE_TAG not in r.data.tags]
    hidden = superseded(trained)  # as a sweep's own table leaves out the attempts it ran again
    trained = [r for r in trained if r.info.run_id not in hidden]
    if not trained:
        raise CompareError(f"experiment {target!r} has no runs")
    return f"experiment {target}", trained, None


def check_objective(runs: list, objective: str) -> None:
    """A metric no run logged would sort nothing and leave its column empty."""
    logged = {key for run in runs for key in run.data.metrics}
    if not logged & {objective, train_twin(objective)}:  # run_objective's keys
        raise ConfigError(f"--objective {objective}: no run logged this metric; "
                          f"metrics these runs have: {', '.join(sorted(logged)) or 'none'}")


def comparison_rows(client, runs: list, monitor: str, parent=None) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, rows)`` ranked as ``SweepTable.ranked``: finished runs first, best first by the
    objective, then stopped or failed ones, runs without it last."""
    table = runs_table(client, runs, monitor, parent)
    return table.columns, table.ranked()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    cells = [columns] + [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    # A missing value ("-") leaves a column of numbers right-aligned.
    shown = [[_cell(r.get(c)) for r in rows if r.get(c) is not None] for c in columns]
    numeric = [bool(values) and all(v.replace(".", "").replace("-", "").isdigit() for v in values) for values in shown]
    return "\n".join(
        "  ".join(cell.rjust(w) if num else cell.ljust(w)
                  for cell, w, num in zip(line, widths, numeric, strict=True)).rstrip()
        for line in cells
    )


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if path.is_dir():
        raise ConfigError(f"--csv {path}: is a folder; expected a file path, such as {path / 'comparison.csv'}")
    missing = [folder for folder in path.parents if not folder.exists()]  # deepest first
    try:
        write_atomically(path, lambda stream: stream.write(table.getvalue().encode()))
    except OSError as exc:
        # A failed write leaves nothing behind: no partial table, no folders made for it.
        for folder in missing:
            with contextlib.suppress(OSError):
                folder.rmdir()
        reason = exc.strerror or str(exc)
        if exc.filename is not None and Path(exc.filename).absolute() in map(Path.absolute, path.parents):  # on the way
            reason += f": '{exc.filename}'"
        raise ConfigError(f"--csv {path}: cannot write the table ({reason}); "
                          f"expected a file in a writable folder") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnx compare", description=__doc__.split("\n\n")[1])
    p.add_argument("target", help="an experiment name (e.g. lenet) or a sweep's parent run id")
    p.add_argument("--objective", metavar="METRIC",
                   help="sort by the best epoch's METRIC (default: the sweep's objective, else the "
                        "runs' trainer.monitor, else val_acc)")
    p.add_argument("--csv", metavar="PATH", default="comparison.csv",
                   help="where to write the table as CSV (default: comparison.csv)")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    return p


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    from cnnx.tracking.mlflow_tracker import existing_store, store_setting, unusable_store

    args = parser().parse_args(argv)
    store = existing_store(args.tracking_uri)
    from mlflow import MlflowClient  # after the checks: a missing store is reported at once
    from mlflow.exceptions import MlflowException

    client = MlflowClient(store)
    try:
        description, runs, parent = find_runs(client, args.target)
        sweep_objective = parent.data.tags.get(OBJECTIVE_TAG) if parent is not None else None
        if args.objective:
            check_objective(runs, args.objective)
        monitors = {r.data.params.get("trainer.monitor") for r in runs} - {None}
        monitor = args.objective or sweep_objective or (monitors.pop() if len(monitors) == 1 else "val_acc")
        columns, rows = comparison_rows(client, runs, monitor, parent)
    except MlflowException as exc:  # a server that is down, a store it cannot read
        raise unusable_store(store, exc, store_setting(args.tracking_uri)) from None
    csv_path = Path(args.csv).expanduser()
    write_csv(csv_path, columns, rows)  # first: a path it cannot write is reported on its own
    print(f"{description}: {len(rows)} runs, best {objective_metric(runs, monitor)} "
          f"({'highest' if objective_mode(monitor) == 'max' else 'lowest'}) first")
    print(format_table(columns, rows))
    print(f"wrote {csv_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
