"""Stores MLflow refuses on its first write, through the real CLI and a real sqlite store: an
experiment deleted in the UI, a read-only store, a schema of another MLflow version, a damaged
file. Each is one line before any training, exit 2, no checkpoint, no run left RUNNING, with the
tracking process (the default) and without it (every sweep job's default)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from e2e_helpers import run_cli, run_cli_many, store_client

pytestmark = pytest.mark.slow

BASE = ["+experiment=digits_small", "trainer.epochs=2", "tracking.log_plots=false", "tracking.log_model=false"]
MODES = (["tracking.background=true"], ["tracking.background=false"])


def refused_before_training(results, workdir: Path) -> list[str]:
    """Problems with runs that should each have stopped in one line before training."""
    problems = []
    for result in results:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith("cnnx: error: "):
            problems.append(f"{result.args}: exit {result.returncode}, stderr ends {result.stderr[-800:]!r}")
    checkpoints = [p for p in workdir.rglob("epoch-*.npz") if "seed" not in p.parts]
    if checkpoints:
        problems.append(f"checkpoints written: {checkpoints}")
    return problems


def test_an_experiment_deleted_in_the_ui_is_refused_before_training_naming_how_to_restore_it(tmp_path):
    # A run whose checkpoint names its MLflow run (in process), to resume after the deletion.
    seed = run_cli([*BASE, "trainer.epochs=1", "tracking.background=false", "hydra.run.dir=runs/seed"], tmp_path)
    assert seed.returncode == 0, seed.stderr[-2000:]
    client = store_client(tmp_path)
    experiment = client.get_experiment_by_name("digits_small")
    (run,) = client.search_runs([experiment.experiment_id])
    client.delete_experiment(experiment.experiment_id)

    runs = [([*BASE, *mode, f"hydra.run.dir=runs/new{i}"], tmp_path) for i, mode in enumerate(MODES)]
    # Each resume from a copy of the run's folder: two processes resuming one folder at once are
    # refused for that (its lock), whichever comes second, before the store is looked at.
    shutil.copytree(tmp_path / "runs" / "seed", tmp_path / "copy")
    shutil.move(tmp_path / "copy", tmp_path / "runs" / "seed" / "copy")
    runs += [([*BASE, *mode, "trainer.resume=true", f"hydra.run.dir={folder}"], tmp_path)
             for mode, folder in zip(MODES, ["runs/seed", "runs/seed/copy"], strict=True)]
    results = run_cli_many(runs)
    assert not refused_before_training(results, tmp_path)
    restore = (f"restore it with: MLFLOW_TRACKING_URI=sqlite:///{tmp_path}/mlflow.db mlflow experiments restore "
               f"--experiment-id {experiment.experiment_id}")
    for result in results[:2]:
        assert "experiment_name='digits_small'" in result.stderr and "is deleted" in result.stderr, result.stderr
        assert restore in result.stderr and "or choose another experiment_name" in result.stderr
    for result in results[2:]:  # a resumed run continues its own run, in that experiment
        assert f"trainer.resume: the checkpoint's MLflow run {run.info.run_id}" in result.stderr, result.stderr
        assert restore in result.stderr
    assert client.get_experiment(experiment.experiment_id).lifecycle_stage == "deleted"
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert len(client.search_runs([experiment.experiment_id], run_view_type=3)) == 1  # no run added


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` and the store in it read-only: a read-only mount as root (which writes through
    file modes), the file and folder modes otherwise."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [folder, *folder.iterdir()]}
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"no read-only store as root without a bind mount: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_store_is_refused_before_training_as_read_only(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri = "tracking.uri=sqlite:///store/mlflow.db"
    seed = run_cli([*BASE, "trainer.epochs=1", uri, "hydra.run.dir=runs/seed"], tmp_path)
    assert seed.returncode == 0, seed.stderr[-2000:]
    with read_only(store):
        results = run_cli_many([([*BASE, *mode, uri, f"hydra.run.dir=runs/r{i}"], tmp_path)
                                for i, mode in enumerate(MODES)])
    assert not refused_before_training(results, tmp_path)
    for result in results:
        # (a read-only mount, or chmod on both: fixing the file alone would not do)
        assert "(tracking.uri): 'store/mlflow.db' and its folder are read-only" in result.stderr, result.stderr


def test_a_store_of_another_mlflow_schema_or_a_damaged_one_is_refused_before_training(tmp_path):
    seed = run_cli([*BASE, "trainer.epochs=1", "hydra.run.dir=runs/seed"], tmp_path)
    assert seed.returncode == 0, seed.stderr[-2000:]
    store = tmp_path / "mlflow.db"
    older, newer, damaged = (tmp_path / name for name in ("older.db", "newer.db", "damaged.db"))
    for copy, revision in ((older, "0c779009ac13"), (newer, "ffffffffffff")):  # an older MLflow's; none known
        copy.write_bytes(store.read_bytes())
        with contextlib.closing(sqlite3.connect(copy)) as connection, connection:
            connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    damaged.write_bytes(store.read_bytes()[:20000])  # a truncated copy: its header is intact
    cases = [(older, "has an older MLflow's schema (revision 0c779009ac13"),
             (newer, "has a schema revision MLflow"), (damaged, "is damaged (database disk image is malformed)")]
    runs = [([*BASE, *mode, f"tracking.uri=sqlite:///{path.name}", f"hydra.run.dir=runs/{path.stem}{i}"], tmp_path)
            for path, _ in cases for i, mode in enumerate(MODES)]
    results = run_cli_many(runs)
    assert not refused_before_training(results, tmp_path)
    for (path, fragment), pair in zip(cases, (results[0:2], results[2:4], results[4:6])):
        for result in pair:
            assert f"(tracking.uri): '{path.name}' {fragment}" in result.stderr, result.stderr
    assert "mlflow db upgrade sqlite:///older.db" in results[0].stderr


def test_compare_and_predict_refuse_a_store_uri_that_names_no_database_file(tmp_path):
    import sys

    (tmp_path / "adir").mkdir()
    for args, fragment in ((["compare", "digits_small", "--tracking-uri", "sqlite:///"], "names no database file"),
                           (["predict", "--run", "abc", "--tracking-uri", "sqlite:///", "x.npz"], "names no database file"),
                           (["compare", "digits_small", "--tracking-uri", "sqlite:///adir"], "is a folder")):
        result = subprocess.run([sys.executable, "-m", "cnnx", *args], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"cnnx: error: --tracking-uri='{args[-1] if 'compare' in args else 'sqlite:///'}'")
        assert fragment in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]


def test_a_writable_store_in_a_read_only_folder_names_the_folder(tmp_path, monkeypatch):
    """sqlite writes its journal beside the file: the folder was at fault, yet the message said
    the file was read-only, and its mode said otherwise. (The modes are those a user sees after
    chmod 555 on the folder; root, who writes through modes, makes the write fail by a mount.)"""
    import sqlite3

    from cnnx.tracking import store_check

    store = tmp_path / "store"
    store.mkdir()
    with sqlite3.connect(store / "mlflow.db") as connection:
        connection.execute("CREATE TABLE t (x)")
    monkeypatch.setattr(store_check.os, "access", lambda path, mode: Path(path) != store)
    with read_only(store):
        problem = store_check._unusable_database(store / "mlflow.db")
    assert problem.startswith(f"its folder '{store}' is read-only (")
