"""Tracking in a helper process (the default for single runs) logs what in-process tracking
logs, and a store that cannot be reached still fails the run before it trains."""

from __future__ import annotations

import getpass
import json
from datetime import datetime
from pathlib import Path

import pytest
from e2e_helpers import all_runs, git_work_tree, list_artifacts, metric_history, run_cli, store_client

from cnnx.tracking.store_check import is_remote
from cnnx.tracking.sqlite_store import create_store_atomically

pytestmark = pytest.mark.slow

WALL_CLOCK = {"epoch_seconds"}


def _logged(workdir):
    (run,) = all_runs(workdir)
    client = store_client(workdir)
    metrics = {key: metric_history(client, run.info.run_id, key) for key in run.data.metrics if key not in WALL_CLOCK}
    artifacts = sorted(list_artifacts(client, run.info.run_id))
    tags = {k: v for k, v in run.data.tags.items()
            if k.startswith(("cnnx.", "mlflow.source.", "mlflow.user")) and k != "cnnx.run_key"}
    # where this run keeps its checkpoints: its own run directory, so not compared across runs
    checkpoints = Path(tags.pop("cnnx.checkpoint_dir"))
    assert checkpoints.name == "checkpoints" and workdir in checkpoints.parents, checkpoints
    return run, metrics, artifacts, tags


def first_epoch_logged_ms(workdir: Path) -> int:
    """When the run's log says its first epoch ended (the log's clock is local time)."""
    (log,) = workdir.glob("outputs/*/*/app.log")
    line = next(line for line in log.read_text().splitlines() if "] - epoch " in line and " 1/" in line)
    stamp = datetime.strptime(line[1:line.index("]")], "%Y-%m-%d %H:%M:%S,%f")
    return int(stamp.timestamp() * 1000)


def test_background_and_in_process_tracking_log_the_same_run(tmp_path):
    # Early stopping ends it after epoch 2 (nothing improves by 10 after epoch 1).
    args = ["+experiment=digits_small", "trainer.epochs=3", "model.layers.conv1.out_channels=4",
            "trainer.early_stopping.enabled=true", "trainer.early_stopping.patience=1",
            "trainer.early_stopping.min_delta=10", "trainer.checkpoint.enabled=true", "seed=0", "dataset.seed=0"]
    # Run from a git work tree whose tracked files differ from its commit.
    commit = git_work_tree(tmp_path, dirty=True)
    logged = {}
    for background in ("true", "false"):
        workdir = tmp_path / background
        workdir.mkdir()
        result = run_cli([*args, f"tracking.background={background}"], workdir)
        assert result.returncode == 0, result.stderr
        logged[background] = _logged(workdir)
    (run, metrics, artifacts, tags), (run_in, metrics_in, artifacts_in, tags_in) = logged["true"], logged["false"]
    assert run.info.status == run_in.info.status == "FINISHED"
    # Both runs start when training does: the helper process creates its run a second or
    # more later, once MLflow is imported, and the UI counted the run's duration from then.
    for workdir, started in ((tmp_path / "true", run.info.start_time), (tmp_path / "false", run_in.info.start_time)):
        assert started <= first_epoch_logged_ms(workdir), workdir
    # Keys with the same last part are named as far up as tells them apart.
    assert run.info.run_name == run_in.info.run_name == (
        "epochs=3,conv1.out_channels=4,early_stopping.enabled=true,patience=1,min_delta=10,"
        "checkpoint.enabled=true,seed=0,dataset.seed=0")
    assert metrics == metrics_in and len(metrics["val_acc"]) == 2
    # The objective at every epoch, the best so far: what the UI compares runs by.
    val_acc = [value for _, value in metrics["val_acc"]]
    assert metrics["best_val_acc"] == [(1, val_acc[0]), (2, max(val_acc))]
    differing = {k for k in run.data.params.keys() | run_in.data.params.keys()
                 if run.data.params.get(k) != run_in.data.params.get(k)}
    assert differing == {"tracking.background"}
    # the command lines differ in that one override too
    overrides, overrides_in = (json.loads(t.pop("cnnx.overrides")) for t in (tags, tags_in))
    assert overrides == [*args, "tracking.background=true"] and overrides_in == [*args, "tracking.background=false"]
    assert tags == tags_in
    # The run says early stopping ended it, and that its model is epoch 1's.
    assert {k: v for k, v in tags.items() if k.startswith("cnnx.early_stopping.")} == {
        "cnnx.early_stopping.stopped_epoch": "2", "cnnx.early_stopping.best_epoch": "1",
        "cnnx.early_stopping.restored_best": "true"}
    # What produced the run, as MLflow's fluent API would record it, for both trackers.
    assert {k: tags[k] for k in tags if not k.startswith("cnnx.") or k == "cnnx.source.git.dirty"} == {
        "mlflow.source.git.commit": commit, "mlflow.source.git.branch": "main", "cnnx.source.git.dirty": "true",
        "mlflow.source.name": "cnnx", "mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser()}
    # Image file names carry a timestamp and a random suffix: compare what they show, per step.
    def shape(paths):
        return sorted(p.split("%")[0].split("+step+")[0] + f"@{p.split('+step+')[1].split('+')[0]}"
                      if "+step+" in p else p for p in paths)
    assert shape(artifacts) == shape(artifacts_in)
    assert run.data.tags.get("cnnx.run_key") and "cnnx.run_key" not in run_in.data.tags


def test_background_tracking_fails_before_training_on_an_unusable_sqlite_path(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    result = run_cli(["+experiment=digits_small", "trainer.epochs=1",
                      f"tracking.uri=sqlite:///{tmp_path}/a_file/runs.db"], tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("cnnx: error: cannot use MLflow store") and "tracking.uri" in lines[0]
    assert not list(tmp_path.rglob("epoch-*.npz"))


@pytest.mark.parametrize(("uri", "remote"), [
    ("sqlite:///mlflow.db", False), ("sqlite:////abs/m.db", False), ("file:///tmp/mlruns", False),
    ("mlruns", False), ("/abs/mlruns", False), ("http://127.0.0.1:5000", True),
    ("https://mlflow.example.com", True), ("postgresql://u@h/db", True), ("databricks", True),
])
def test_which_stores_are_checked_up_front_and_which_by_waiting_for_the_run(uri, remote):
    assert is_remote(uri) == remote


def test_a_new_sqlite_store_appears_complete_and_an_existing_one_is_kept(tmp_path):
    path = tmp_path / "deep" / "runs.db"
    create_store_atomically(f"sqlite:///{path}")
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == ["runs.db"]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{path}")
    client.create_experiment("kept")
    create_store_atomically(f"sqlite:///{path}")
    assert client.get_experiment_by_name("kept") is not None


@pytest.mark.slow
def test_a_killed_tracking_process_stops_the_run_saying_how_and_how_to_resume(tmp_path):
    """It said only "the MLflow tracking process exited (code -9)": no cause, no way on."""
    import os
    import signal

    from e2e_helpers import all_runs, processes, start_cli, wait_for_file

    import time

    run = start_cli(["+experiment=digits_small", "trainer.epochs=1000", "tracking.log_plots=false",
                     "hydra.run.dir=run"], tmp_path)
    # Once an epoch is checkpointed (the file names change as older ones are pruned).
    wait_for_file(tmp_path / "run" / "checkpoints", run)
    # ... and the tracking process has started the MLflow run
    while not list((tmp_path / "run" / "checkpoints").glob("epoch-*.npz")) or not all_runs(tmp_path):
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    (helper,) = [p["pid"] for p in processes() if p["ppid"] == run.pid and "resource_tracker" not in p["command"]]
    os.kill(helper, signal.SIGKILL)
    try:
        _, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 128 + signal.SIGKILL  # as a shell reports it; 2 is for bad input
    assert stderr.strip().splitlines()[-1] == (
        "cnnx: error: the MLflow tracking process was killed by SIGKILL (also the kernel's out-of-memory "
        "killer's signal); training stopped, and trainer.resume=true resumes it from its newest checkpoint, "
        "if it wrote one")
    # ... and the run it had started is not left RUNNING for good: KILLED, as an interrupted one
    (run_record,) = all_runs(tmp_path)
    assert run_record.info.status == "KILLED" and run_record.data.tags["error"].startswith(
        "the MLflow tracking process was killed by SIGKILL")


def test_a_tracking_process_ended_by_a_signal_python_does_not_name_is_still_one_line():
    """signal.Signals(35) raises ValueError: the error about the error became a traceback."""
    from types import SimpleNamespace

    from cnnx.tracking.background import BackgroundTracker

    def ended_process(code):
        return SimpleNamespace(_process=SimpleNamespace(exitcode=code, join=lambda timeout: None))

    ended = BackgroundTracker._ended(ended_process(-35))
    assert str(ended).startswith("the MLflow tracking process was killed by signal 35; training stopped")
    assert ended.exit_status == 128 + 35
    assert BackgroundTracker._ended(ended_process(1)).exit_status == 1

    class NotYetReaped:  # the pipe closed as it died; its exit code comes once it is joined
        exitcode = None

        def join(self, timeout):
            self.exitcode = -9

    assert BackgroundTracker._ended(SimpleNamespace(_process=NotYetReaped())).exit_status == 137


def test_a_run_whose_tracking_process_died_before_reporting_it_is_found_by_its_key_and_ended(tmp_path):
    """Killed after creating the run but before telling the trainer its id, the tracking process
    left it RUNNING: the trainer knew no id to end it by."""
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from cnnx.tracking.background import BackgroundTracker
    from cnnx.tracking.mlflow_tracker import RUN_KEY_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    ours = client.create_run(experiment_id, tags={RUN_KEY_TAG: "ours"}).info.run_id
    other = client.create_run(experiment_id, tags={RUN_KEY_TAG: "other"}).info.run_id
    trainer_side = SimpleNamespace(uri=uri, remote=False, run_id=None, run_key="ours", experiment_name="e")
    BackgroundTracker._end_orphaned_run(trainer_side, "the MLflow tracking process was killed by SIGKILL")
    assert client.get_run(ours).info.status == "KILLED"
    assert client.get_run(ours).data.tags["error"] == "the MLflow tracking process was killed by SIGKILL"
    assert client.get_run(other).info.status == "RUNNING"
    # A tracking server is left alone: MLflow's retries held the failing run for 248 s when the
    # server itself was unreachable
    BackgroundTracker._end_orphaned_run(SimpleNamespace(uri="http://127.0.0.1:9", remote=True, run_id="x",
                                                        run_key="k", experiment_name="e"), "gone")
