"""`cnnx compare` on a real 3-job sweep: the runs in order of the objective, as a table and CSV."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
from e2e_helpers import all_runs, metric_history, run_cli, store_client

pytestmark = pytest.mark.slow

LEARNING_RATES = ("0.01", "0.05", "0.1")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    result = run_cli(["-m", "+experiment=digits_small", "trainer.epochs=1",
                      f"optimizer.lr={','.join(LEARNING_RATES)}",
                      # Plots and the model are not compared: skip them to keep the sweep short.
                      "tracking.log_plots=false", "tracking.log_model=false"], folder)
    assert result.returncode == 0, result.stderr
    return folder


def _compare(folder, *args):
    return subprocess.run([sys.executable, "-m", "cnnx", "compare", *args], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def _expected_order(folder) -> list[str]:
    """Child run ids, best val_acc first, from the store itself."""
    client = store_client(folder)
    children = [r for r in all_runs(folder) if "optimizer.lr" in r.data.params]
    assert sorted(r.data.params["optimizer.lr"] for r in children) == sorted(LEARNING_RATES)
    best = {r.info.run_id: max(v for _, v in metric_history(client, r.info.run_id, "val_acc"))
            for r in children}
    assert len(set(best.values())) == 3, "the test needs three different objectives"
    return sorted(best, key=best.get, reverse=True)


def _check_table(stdout: str, csv_path, expected: list[str]) -> None:
    lines = stdout.strip().splitlines()
    header = lines[1].split()
    assert header[:4] == ["rank", "run_id", "run_name", "status"]
    assert "optimizer.lr" in header and "best_val_acc" in header and "test_acc" in header
    rows = [line.split() for line in lines[2:]]
    assert [row[1] for row in rows] == expected
    assert [row[0] for row in rows] == ["1", "2", "3"]
    objective = header.index("best_val_acc")
    values = [float(row[objective]) for row in rows]
    assert values == sorted(values, reverse=True)
    with csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["run_id"] for row in table] == expected
    assert {row["optimizer.lr"] for row in table} == set(LEARNING_RATES)
    # Nothing that was not swept: the seed, the model, the epochs are the same for all runs.
    assert "seed" not in table[0] and "trainer.epochs" not in table[0]


def test_compare_experiment_prints_runs_in_order_of_the_objective(sweep):
    result = _compare(sweep, "digits_small", "--csv", "out/table.csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("experiment digits_small: 3 runs, best val_acc")
    _check_table(result.stdout, sweep / "out" / "table.csv", _expected_order(sweep))


def test_compare_parent_run_prints_its_children_in_order_of_the_objective(sweep):
    (parent,) = {r.data.tags.get("mlflow.parentRunId") for r in all_runs(sweep)} - {None}
    result = _compare(sweep, parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(f"children of run {parent}: 3 runs")
    _check_table(result.stdout, sweep / "comparison.csv", _expected_order(sweep))
    # The sweep's own table on its parent is the same, ranked the same (it was in job order).
    summary = store_client(sweep).download_artifacts(parent, "comparison.csv", str(sweep / "summary"))
    with open(summary) as logged, (sweep / "comparison.csv").open() as printed:
        assert list(csv.reader(logged)) == list(csv.reader(printed))


@pytest.mark.parametrize(("target", "fragment"), [
    ("no_such_experiment", "no experiment or run named 'no_such_experiment'; experiments in this store: "),
    ("0" * 32, "no experiment or run named '00000000000000000000000000000000'"),
])
def test_compare_unknown_target_is_one_line(sweep, capsys, target, fragment):
    from cnnx.compare import main as compare_main

    code = compare_main([target, "--csv", str(sweep / "never.csv"),
                         "--tracking-uri", f"sqlite:///{sweep / 'mlflow.db'}"])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.startswith(f"cnnx: error: {fragment}") and "\n" not in error
    assert not (sweep / "never.csv").exists()


def test_compare_of_a_parent_in_the_trash_says_it_is_deleted(sweep, capsys):
    from cnnx.compare import main as compare_main

    client = store_client(sweep)
    (experiment,) = [e for e in client.search_experiments() if e.name == "digits_small"]
    trashed = client.create_run(experiment.experiment_id, run_name="sweep stopped before its first job")
    client.set_terminated(trashed.info.run_id, "FAILED")
    client.delete_run(trashed.info.run_id)
    code = compare_main([trashed.info.run_id, "--tracking-uri", f"sqlite:///{sweep / 'mlflow.db'}",
                         "--csv", str(sweep / "never.csv")])
    assert code == 2
    assert capsys.readouterr().err.strip() == (f"cnnx: error: run {trashed.info.run_id} is deleted (in MLflow's "
                                              "trash: a sweep stopped before its first job leaves its parent there)")


def test_compare_unknown_objective_is_one_line_naming_the_runs_metrics(sweep):
    result = _compare(sweep, "digits_small", "--objective", "foo", "--csv", "foo.csv")
    assert result.returncode == 2 and result.stdout == ""
    error = result.stderr.strip()
    assert error.startswith("cnnx: error: --objective foo: no run logged this metric; "
                            "metrics these runs have: ") and "\n" not in error
    assert {"val_acc", "val_loss", "test_acc"} <= set(error.split(": ")[-1].split(", "))
    assert not (sweep / "foo.csv").exists()


@pytest.mark.parametrize(("where", "reason"), [
    ("a_file/table.csv", "File exists: '{folder}/a_file'"),
    # The folders are made before the name turns out too long: they go again.
    ("new/folders/" + "x" * 300 + ".csv", "File name too long"),
])
def test_compare_unwritable_csv_is_one_line_and_leaves_nothing(sweep, tmp_path, where, reason):
    (tmp_path / "a_file").write_text("kept")
    (tmp_path / "a_folder").mkdir()
    result = _compare(sweep, "digits_small", "--csv", str(tmp_path / where))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"cnnx: error: --csv {tmp_path / where}: cannot write the table "
                                     f"({reason.format(folder=tmp_path)}); expected a file in a writable folder")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a_file", "a_folder"]
    assert (tmp_path / "a_file").read_text() == "kept"


@pytest.mark.parametrize(("args", "env", "store"), [
    ([], {}, "sqlite:///mlflow.db (the default; set --tracking-uri or $MLFLOW_TRACKING_URI)"),
    (["--tracking-uri", "sqlite:///nope/x.db"], {}, "sqlite:///nope/x.db (--tracking-uri)"),
    ([], {"MLFLOW_TRACKING_URI": "mlruns"}, "mlruns ($MLFLOW_TRACKING_URI)"),
])
def test_compare_without_a_store_creates_none(tmp_path, args, env, store):
    result = run_cli(["compare", "lenet", *args], tmp_path, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().startswith(f"cnnx: error: no MLflow store at {store}: '{tmp_path}/")
    assert "train a run first" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # MLflow would have created an empty store (and its folder) to look the name up in.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("command", "args", "env", "setting"), [
    ("compare", ["lenet", "--tracking-uri", "URI"], {}, "--tracking-uri"),
    ("compare", ["lenet"], {"MLFLOW_TRACKING_URI": "URI"}, "$MLFLOW_TRACKING_URI"),
    ("predict", ["--run", "0" * 32, "--tracking-uri", "URI", "image.png"], {}, "--tracking-uri"),
])
def test_a_server_that_is_down_is_one_line_naming_where_it_was_given(tmp_path, command, args, env, setting):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = run_cli([command, *(uri if a == "URI" else a for a in args)], tmp_path,
                     env={k: uri if v == "URI" else v for k, v in env.items()})
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.strip() == f"cnnx: error: cannot reach MLflow tracking server '{uri}' ({setting}): Connection refused"


def test_compare_into_a_closed_pipe_exits_quietly(sweep, tmp_path):
    # `cnnx compare ... | head -1`: the reader is gone before the table is written.
    process = subprocess.Popen([sys.executable, "-m", "cnnx", "compare", "digits_small", "--csv", str(tmp_path / "t.csv")],
                               cwd=sweep, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 141, stderr  # 128 + SIGPIPE, as the shell reports it
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_runs_without_a_validation_split_are_ranked_and_named_by_train_acc(tmp_path):
    """Such runs log best_train_acc (their objective); a table headed best_val_acc would claim
    validation figures that do not exist."""
    result = run_cli(["-m", "+experiment=digits_small", "trainer.epochs=1", "dataset.val_fraction=0",
                      "optimizer.lr=0.05,0.1", "tracking.log_plots=false", "tracking.log_model=false"], tmp_path)
    assert result.returncode == 0, result.stderr
    (parent,) = [r for r in all_runs(tmp_path) if "cnnx.sweep.role" in r.data.tags]
    assert "best_train_acc" in parent.data.metrics and "best_val_acc" not in parent.data.metrics
    client = store_client(tmp_path)
    summary = client.download_artifacts(parent.info.run_id, "comparison.csv", str(tmp_path))
    with open(summary) as handle:
        assert "best_train_acc" in next(csv.reader(handle))
    for target in ("digits_small", parent.info.run_id):
        shown = _compare(tmp_path, target, "--csv", "table.csv")
        assert shown.returncode == 0, shown.stderr
        assert ": 2 runs, best train_acc (highest) first" in shown.stdout.splitlines()[0]
        header = shown.stdout.splitlines()[1].split()
        assert "best_train_acc" in header and "best_val_acc" not in header


def test_compare_csv_into_a_folder_says_so_and_the_table_is_as_readable_as_any_new_file(sweep, tmp_path):
    """A folder was reported as a temporary file's "Is a directory"; and the table came out
    0600 (mkstemp's mode), unreadable by the team it was written for."""
    (tmp_path / "a_folder").mkdir()
    refused = _compare(sweep, "digits_small", "--csv", str(tmp_path / "a_folder"))
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"cnnx: error: --csv {tmp_path / 'a_folder'}: is a folder; expected a file path, such as "
        f"{tmp_path / 'a_folder' / 'comparison.csv'}")
    written = _compare(sweep, "digits_small", "--csv", str(tmp_path / "table.csv"))
    assert written.returncode == 0, written.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "table.csv").stat().st_mode & 0o777 == 0o666 & ~umask
