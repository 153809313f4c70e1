"""The pieces of sweeps that need no subprocess: table, fingerprint, BLAS share, names, links."""

from __future__ import annotations

import csv
import json
import os
import socket
import time
from pathlib import Path

import pytest

from cnnx.app import logged_in, run_name_from_overrides, short_overrides
from cnnx.blas_threads import threads_per_job
from cnnx.tracking.sweep_job import SweepJob
from cnnx.tracking.sqlite_store import absolute_store_uri
from cnnx.tracking.sweep_link import LINK_FILE, SweepLink
from cnnx.tracking.sweep_owner import (
    HOST_TAG, PID_TAG, PROCESS_STARTED_TAG, driver_tags, process_started, still_running,
)
from cnnx.tracking.sweep_resume import (
    CHECKPOINT_DIR_TAG, FINGERPRINT_TAG, config_fingerprint, finished_twin, stopped_twin, twins,
)
from cnnx.tracking.sweep_summary import (
    BEST_MODEL_TAG, OVERRIDES_TAG, SWEPT_TAG, SweepTable, child_runs, record_summary, superseded,
    swept_keys_of_command, sweep_table,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    # one store for the module: building MLflow's schema costs seconds. Created from inside
    # its folder, so its artifacts go to folder/mlruns, not into the working directory.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        return MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def make_sweep(client, children, parent_tags=None, overrides=None):
    """A parent and its children: ``(params, {metric: [per-epoch values]}, status)`` each;
    ``overrides``: each child's command-line overrides."""
    from mlflow.entities import Metric, Param

    experiment_id = client.create_experiment(f"sweep{len(client.search_experiments())}")
    parent = client.create_run(experiment_id, run_name="sweep", tags=parent_tags or {})
    ids = []
    for i, (params, histories, status) in enumerate(children):
        tags = {"mlflow.parentRunId": parent.info.run_id}
        if overrides is not None:
            tags[OVERRIDES_TAG] = json.dumps(overrides[i])
        run = client.create_run(experiment_id, run_name=f"child{i}", tags=tags)
        metrics = [Metric(k, v, 0, step) for k, values in histories.items() for step, v in enumerate(values, 1)]
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()], metrics=metrics)
        client.set_terminated(run.info.run_id, status)
        ids.append(run.info.run_id)
    client.create_run(experiment_id, run_name="not in the sweep")
    return parent.info.run_id, ids


COMMON = {"trainer.epochs": 3, "tracking.uri": "x", "sweep.resume": True}


@pytest.mark.slow
def test_table_picks_the_best_epoch_of_finished_children_and_records_it(client, tmp_path):
    parent, ids = make_sweep(client, [
        ({**COMMON, "optimizer.lr": 0.01, "model.name": "a"}, {"val_acc": [0.5, 0.9, 0.6], "test_acc": [0.7]}, "FINISHED"),
        ({**COMMON, "optimizer.lr": 0.1, "model.name": "b"}, {"val_acc": [0.8, 0.85, 0.86]}, "FINISHED"),
        ({**COMMON, "optimizer.lr": 0.3, "model.name": "c"}, {"val_acc": [0.95]}, "FAILED"),
        ({**COMMON, "optimizer.lr": 0.5, "model.name": "d"}, {}, "KILLED"),  # stopped before an epoch
    ])
    table = sweep_table(client, parent, "val_acc")
    assert table.swept == ["model.name", "optimizer.lr"]  # where runs go and resuming are not choices
    assert [r["run_id"] for r in table.rows] == ids
    assert [r["best_val_acc"] for r in table.rows] == [0.9, 0.86, 0.95, None]
    assert table.best()["run_id"] == ids[0]  # best epoch counts, a FAILED run does not

    best = record_summary(client, parent, table)
    run = client.get_run(parent)
    assert best["run_id"] == ids[0] and run.data.tags["cnnx.sweep.best_run_id"] == ids[0]
    assert json.loads(run.data.tags["cnnx.sweep.best_params"]) == {"model.name": "a", "optimizer.lr": "0.01"}
    assert run.data.metrics["best_val_acc"] == 0.9
    # what the UI shows of the sweep without opening a child: the best one's test figures (it
    # logged no test_loss) and the settings every child shares, searchable as params
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("best_test")} == {"best_test_acc": 0.7}
    assert run.data.params == {"trainer.epochs": "3"}  # neither what was swept nor where runs go
    rows = list(csv.DictReader(Path(client.download_artifacts(parent, "comparison.csv", str(tmp_path))).open()))
    # best first by the objective, as `cnnx compare` ranks them: finished runs first, so that
    # rank 1 is the run the parent names as best (the FAILED run's higher figure was rank 1),
    # then the others, the run without a figure last
    assert [(r["rank"], r["optimizer.lr"], r["status"]) for r in rows] == [
        ("1", "0.01", "FINISHED"), ("2", "0.1", "FINISHED"), ("3", "0.3", "FAILED"), ("4", "0.5", "KILLED")]
    assert rows[0]["run_id"] == best["run_id"] and rows[0]["test_acc"] == "0.7" and rows[3]["best_val_acc"] == ""
    assert {a.path for a in client.list_artifacts(parent)} == {"comparison.csv", "comparison.png", "best_child.json"}


@pytest.mark.slow
def test_a_resumed_sweeps_summary_logs_the_shared_settings_again_without_failing(client):
    """A resumed sweep summarises into the parent it had, where MLflow refuses a param's second value."""
    from mlflow.entities import Metric, Param

    # Ctrl-C on a parallel sweep before any epoch: both jobs stopped, the parent summarised.
    jobs = [["optimizer.lr=0.01"], ["optimizer.lr=0.1"]]
    parent, _ = make_sweep(client, [({**COMMON, "seed": 1, "optimizer.lr": lr}, {}, "KILLED") for lr in (0.01, 0.1)],
                           parent_tags={SWEPT_TAG: json.dumps(["optimizer.lr"])}, overrides=jobs)
    record_summary(client, parent, sweep_table(client, parent, "val_acc"))
    record_summary(client, parent, sweep_table(client, parent, "val_acc"))  # the same values again
    run = client.get_run(parent)
    assert run.data.params == {"trainer.epochs": "3", "seed": "1"}

    # Resumed after a default was edited: the jobs run again, their new runs replace the
    # stopped ones and share another value than the parent has.
    for overrides in jobs:
        rerun = client.create_run(run.info.experiment_id, run_name="again", tags={
            "mlflow.parentRunId": parent, OVERRIDES_TAG: json.dumps(overrides)})
        client.log_batch(rerun.info.run_id, params=[Param("trainer.epochs", "3"), Param("seed", "2"),
                                                    Param(*overrides[0].split("="))],
                         metrics=[Metric("val_acc", 0.5, 0, 1), Metric("test_loss", 0.4, 0, 1)])
        client.set_terminated(rerun.info.run_id, "FINISHED")
    table = sweep_table(client, parent, "val_acc")
    assert table.fixed == {"trainer.epochs": "3", "seed": "2"}
    record_summary(client, parent, table)
    run = client.get_run(parent)
    assert run.data.params == {"trainer.epochs": "3", "seed": "1"}  # MLflow keeps a param's first value
    # ... so the value the children went on with is tagged beside it, as a resumed run's are
    assert run.data.tags["cnnx.resumed_with.seed"] == "2" and "cnnx.resumed_with.trainer.epochs" not in run.data.tags
    # Back to the first value on a later resume: the tag goes (it would say what no child did).
    for child in child_runs(client, parent):
        client.delete_run(child.info.run_id)
    for overrides in jobs:
        again = client.create_run(run.info.experiment_id, run_name="back", tags={
            "mlflow.parentRunId": parent, OVERRIDES_TAG: json.dumps(overrides)})
        client.log_batch(again.info.run_id, params=[Param("trainer.epochs", "3"), Param("seed", "1"),
                                                    Param(*overrides[0].split("="))])
        client.set_terminated(again.info.run_id, "FINISHED")
    record_summary(client, parent, sweep_table(client, parent, "val_acc"))
    assert "cnnx.resumed_with.seed" not in client.get_run(parent).data.tags
    run = client.get_run(parent)
    assert run.data.metrics["best_test_loss"] == 0.4 and "best_test_acc" not in run.data.metrics


@pytest.mark.slow
def test_a_new_best_without_a_model_drops_the_earlier_bests_model_uri(client):
    """A resumed sweep whose new best child logged no model must not keep naming the old
    best's model as the sweep's best."""
    parent, ids = make_sweep(client, [({**COMMON, "optimizer.lr": 0.1}, {"val_acc": [0.9]}, "FINISHED")],
                             parent_tags={BEST_MODEL_TAG: "models:/m-of-an-earlier-best"})
    record_summary(client, parent, sweep_table(client, parent, "val_acc"))
    tags = client.get_run(parent).data.tags
    assert tags["cnnx.sweep.best_run_id"] == ids[0] and BEST_MODEL_TAG not in tags


@pytest.mark.slow
def test_the_columns_are_what_the_command_swept_even_a_group_or_a_value_no_child_differs_in(client):
    swept = swept_keys_of_command(["+experiment=lenet", "optimizer=adam,sgd", "optimizer.lr=0.01,abc",
                                   "trainer.epochs=2"], {"trainer.batch_size": "choice(16, 32)"})
    assert swept == ["optimizer", "optimizer.lr", "trainer.batch_size"]
    # the lr=abc jobs failed on their config: no child of theirs, and none that differs in lr
    parent, ids = make_sweep(client, [
        ({**COMMON, "optimizer.lr": 0.01, "optimizer.type": "adam", "trainer.batch_size": 16}, {"val_acc": [0.5]}, "FINISHED"),
        ({**COMMON, "optimizer.lr": 0.01, "optimizer.type": "sgd", "trainer.batch_size": 16}, {"val_acc": [0.7]}, "FINISHED"),
    ], parent_tags={SWEPT_TAG: json.dumps(swept)},
        overrides=[["+experiment=lenet", f"optimizer={o}", "optimizer.lr=0.01", "trainer.batch_size=16"]
                   for o in ("adam", "sgd")])
    table = sweep_table(client, parent, "val_acc")
    assert table.swept == swept
    assert [{k: r[k] for k in swept} for r in table.rows] == [
        {"optimizer": "adam", "optimizer.lr": "0.01", "trainer.batch_size": "16"},
        {"optimizer": "sgd", "optimizer.lr": "0.01", "trainer.batch_size": "16"}]
    record_summary(client, parent, table)
    assert json.loads(client.get_run(parent).data.tags["cnnx.sweep.best_params"]) == {
        "optimizer": "sgd", "optimizer.lr": "0.01", "trainer.batch_size": "16"}


def test_an_attempt_a_later_run_of_the_same_job_replaced_is_left_out():
    from types import SimpleNamespace

    def run(run_id, start, status, fingerprint=None, overrides=None, parent="sweep"):
        tags = {FINGERPRINT_TAG: fingerprint} if fingerprint else {}
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        if overrides is not None:
            tags[OVERRIDES_TAG] = json.dumps(overrides)
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=start, status=status),
                               data=SimpleNamespace(tags=tags))

    runs = [
        run("killed", 1, "KILLED", "a"), run("again", 5, "FINISHED", "a"),  # stopped, then run again
        run("trial", 2, "FINISHED", "b"), run("same trial", 6, "FINISHED", "b"),  # Optuna drew it twice
        run("refused", 3, "FAILED", overrides=["lr=nan", "epochs=1"]),  # failed before training...
        run("retried", 7, "FINISHED", "c", overrides=["epochs=1", "lr=nan"]),  # ...then ran
        run("stopped last", 8, "KILLED", "d"),  # nothing replaced it: it shows
        # Refused (a data file missing), then rerun by the resumed sweep, which adds sweep.resume:
        run("no data yet", 9, "FAILED", overrides=["lr=0.1", "tracking.uri=a"]),
        run("resumed", 10, "FINISHED", "e", overrides=["lr=0.1", "tracking.uri=b", "sweep.resume=true"]),
        # Refused while it was stopped; the stopped run, resumed, finished and kept its start time:
        run("continued", 11, "FINISHED", "f"), run("refused rerun", 12, "FAILED", "f"),
        # Outside a sweep (cnnx compare EXPERIMENT), the same command run again is another run:
        run("plain", 13, "FINISHED", "g", parent=None), run("plain again, training", 14, "RUNNING", "g", parent=None),
        # ... and so is the same config in another sweep
        run("other sweep's", 15, "KILLED", "f", parent="other"),
    ]
    assert superseded(runs) == {"killed", "refused", "no data yet", "refused rerun"}


def test_a_sweep_in_which_no_child_finished_names_no_best():
    """A Ctrl-C'd sweep whose children were all stopped or failed after some epochs: the parent
    was tagged with a KILLED run as cnnx.sweep.best_run_id and logged its figures as the best."""
    table = SweepTable(objective="val_acc", mode="max", swept=["optimizer.lr"], rows=[
        {"run_id": "a", "run_name": "lr=0.1", "status": "KILLED", "optimizer.lr": "0.1", "best_val_acc": 0.9},
        {"run_id": "b", "run_name": "lr=1", "status": "FAILED", "optimizer.lr": "1", "best_val_acc": None},
    ])
    assert table.ranked()[0]["run_id"] == "a"  # still listed first in the comparison ...
    assert table.best() is None  # ... but not named the sweep's best


@pytest.mark.slow
def test_loss_objectives_are_minimised(client):
    parent, ids = make_sweep(client, [
        ({"optimizer.lr": 0.01}, {"val_loss": [0.9, 0.3]}, "FINISHED"),
        ({"optimizer.lr": 0.1}, {"val_loss": [0.5, 0.4]}, "FINISHED"),
    ])
    table = sweep_table(client, parent, "val_loss")
    assert table.mode == "min" and table.best()["run_id"] == ids[0]


@pytest.mark.slow
def test_children_without_a_validation_split_are_judged_by_the_train_twin(client):
    # The sweep asks for val_acc, but runs on a dataset without a val split only log train_acc.
    parent, ids = make_sweep(client, [
        ({"optimizer.lr": 0.01}, {"train_acc": [0.5, 0.7]}, "FINISHED"),
        ({"optimizer.lr": 0.1}, {"train_acc": [0.6, 0.9, 0.8]}, "FINISHED"),
    ])
    table = sweep_table(client, parent, "val_acc")
    # Named as what it is, as those runs log it.
    assert table.objective_column == "best_train_acc"
    assert [r["best_train_acc"] for r in table.rows] == [0.7, 0.9]
    assert table.best()["run_id"] == ids[1]


@pytest.mark.slow
def test_a_child_without_a_validation_split_is_not_ranked_by_its_train_accuracy_among_validated_ones(client):
    """It was: its optimistic train_acc won the best_val_acc column, and the parent's
    best_val_acc was a train accuracy."""
    parent, ids = make_sweep(client, [
        ({"dataset.val_fraction": 0.1}, {"val_acc": [0.8, 0.93], "train_acc": [0.8, 0.95]}, "FINISHED"),
        ({"dataset.val_fraction": 0.0}, {"train_acc": [0.9, 0.98]}, "FINISHED"),
    ])
    table = sweep_table(client, parent, "val_acc")
    assert table.objective_column == "best_val_acc"
    assert [r["best_val_acc"] for r in table.rows] == [0.93, None]
    assert table.best()["run_id"] == ids[0]


def test_fingerprint_ignores_where_a_run_is_logged_but_not_what_it_trains():
    config = {"seed": 0, "optimizer": {"lr": 0.1}, "trainer": {"epochs": 2, "progress": None},
              "tracking": {"uri": "a"}, "sweep": {"resume": False}}
    same = {**config, "tracking": {"uri": "b"}, "sweep": {"resume": True},
            "trainer": {"epochs": 2, "progress": True}}
    assert config_fingerprint(config) == config_fingerprint(same)
    # a job continued from its checkpoint is the job it was (resuming is exact)
    assert config_fingerprint({**config, "trainer": {"epochs": 2, "resume": False}}) == config_fingerprint(
        {**config, "trainer": {"epochs": 2, "resume": "/runs/3/checkpoints"}})
    assert config_fingerprint(config) != config_fingerprint({**config, "optimizer": {"lr": 0.2}})
    assert config_fingerprint(config) != config_fingerprint({**config, "seed": 1})
    # a setting added to cnnx later, at the value that trains as before, leaves earlier jobs' twins found
    npz = {**config, "dataset": {"type": "npz", "path": "x.npz"}}
    assert config_fingerprint(npz) == config_fingerprint({**npz, "dataset": {**npz["dataset"], "layout": "auto"}})
    assert config_fingerprint(npz) != config_fingerprint({**npz, "dataset": {**npz["dataset"], "layout": "nhwc"}})
    assert npz["dataset"] == {"type": "npz", "path": "x.npz"}  # the caller's config is left as it was


def test_early_stoppings_options_while_it_is_off_leave_the_fingerprint_as_earlier_cnnx_computed_it():
    """cnnx 0.2.4 changed the monitor's default: a sweep of an earlier cnnx, resumed, ran every
    finished job again (its fingerprint had changed), though early stopping was off."""
    before = {"enabled": False, "monitor": "val_loss", "mode": "auto", "patience": 5, "min_delta": 0.0,
              "restore_best": True}
    config = {"seed": 0, "optimizer": {"lr": 0.1}, "trainer": {"epochs": 2, "early_stopping": before}}
    # the fingerprint of that config as cnnx 0.2.3 logged it
    assert config_fingerprint(config) == "4bf672b6b516d3dd7f69c434"
    for other in ({"monitor": "val_acc"}, {"patience": 9}):
        changed = {**config, "trainer": {"epochs": 2, "early_stopping": {**before, **other}}}
        assert config_fingerprint(changed) == config_fingerprint(config)
        on = {**config, "trainer": {"epochs": 2, "early_stopping": {**before, **other, "enabled": True}}}
        assert config_fingerprint(on) != config_fingerprint({**config, "trainer": {
            "epochs": 2, "early_stopping": {**before, "enabled": True}}})
    # eval_batch_size (0.2.4 lowered its default) changes evaluated figures only in float32 rounding
    for size in (512, 64, 7):
        chunked = {**config, "trainer": {**config["trainer"], "eval_batch_size": size}}
        assert config_fingerprint(chunked) == "b19a5f873abc3f21a2f8bcd4"  # as cnnx 0.2.3 logged it at 512
    # ... unless the sweep varies them: its jobs then stay apart, each its own run
    apart = {config_fingerprint({**config, "trainer": {**config["trainer"], "eval_batch_size": size}},
                                swept=["trainer.eval_batch_size"]) for size in (32, 64)}
    patience = {config_fingerprint({**config, "trainer": {"epochs": 2, "early_stopping": {**before, "patience": p}}},
                                   swept=["trainer.early_stopping.patience"]) for p in (3, 5)}
    assert len(apart) == 2 and len(patience) == 2


def test_a_resumed_sweep_continues_the_newest_stopped_twin_that_left_checkpoints(client, tmp_path):
    experiment_id = client.create_experiment("twins")
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    clock = iter(range(1_000, 10_000, 1_000))

    def child(status, directory, fingerprint="same"):
        tags = {"mlflow.parentRunId": parent, FINGERPRINT_TAG: fingerprint}
        if directory is not None:
            tags[CHECKPOINT_DIR_TAG] = str(directory)
        run_id = client.create_run(experiment_id, start_time=next(clock), tags=tags).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status)
        return run_id

    saved, emptied = tmp_path / "saved", tmp_path / "emptied"
    saved.mkdir()
    emptied.mkdir()
    (saved / "epoch-0002-batch-0007.npz").write_bytes(b"")
    killed = child("KILLED", saved)
    child("FAILED", None)  # checkpoints were off
    child("RUNNING", emptied)  # killed outright, its checkpoints since deleted
    child("KILLED", saved, fingerprint="another config")

    runs = twins(client, experiment_id, parent, "same")
    assert finished_twin(runs) is None
    run, directory = stopped_twin(runs)
    assert (run.info.run_id, directory) == (killed, saved)
    (saved / "epoch-0002-batch-0007.npz").rename(emptied / "epoch-0003.npz")
    run, directory = stopped_twin(twins(client, experiment_id, parent, "same"))
    assert directory == emptied and run.info.status == "RUNNING"  # a process killed outright

    finished = child("FINISHED", saved)
    assert finished_twin(twins(client, experiment_id, parent, "same")).info.run_id == finished


def test_a_finished_twin_under_another_sweeps_parent_is_not_this_sweeps(client):
    """Twins were searched in the whole experiment: a resumed sweep skipped a job that had
    FINISHED under another sweep there (another grid sharing some values), and it was missing
    from this sweep's table."""
    experiment_id = client.create_experiment("twins of two sweeps")
    this, other = (client.create_run(experiment_id, run_name=name).info.run_id for name in ("this", "other"))
    done = client.create_run(experiment_id, tags={"mlflow.parentRunId": other, FINGERPRINT_TAG: "same"}).info.run_id
    client.set_terminated(done, "FINISHED")
    assert twins(client, experiment_id, this, "same") == []
    assert finished_twin(twins(client, experiment_id, other, "same")).info.run_id == done


@pytest.mark.parametrize("launcher,cpus,expected", [
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 2, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 8, 4),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 8, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -2}, 8, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 3}, 2, 1),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
      "cpus_per_task": 4}, 64, 4),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
      "cpus_per_task": None}, 2, 1),
    ({"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
      "ray": {"remote": {"num_cpus": 2}}}, 16, 2),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 2, None),
    # told by its class, not by words in its path: "array" holds "ray"
    ({"_target_": "my_lab.array_launcher.ArrayLauncher", "ray": {"remote": {"num_cpus": 2}}}, 16, None),
])
def test_each_job_gets_its_share_of_the_cores(launcher, cpus, expected):
    assert threads_per_job(launcher, cpus) == expected


def test_run_names_state_the_overrides_but_not_where_or_how_the_sweep_runs():
    overrides = ["+experiment=lenet", "+hparams=lenet_optuna", "model.layers.conv1.out_channels=16",
                 "optimizer.lr=0.1", "sweep.resume=true", "tracking.uri=http://x", "tracking.log_plots=False"]
    assert run_name_from_overrides(overrides, {}) == "conv1.out_channels=16,lr=0.1"
    assert short_overrides(overrides, keep_presets=True) == [
        "experiment=lenet", "hparams=lenet_optuna", "conv1.out_channels=16", "lr=0.1"]
    # a float an Optuna sampler drew is shown to four significant digits, typed ones as typed
    assert short_overrides(["optimizer.lr=0.033175532177089365", "optimizer.lr=0.00125", "seed=1234567890123"]) == [
        "lr=0.03318", "lr=0.00125", "seed=1234567890123"]
    # a sweep over presets (+experiment=lenet,digits_small) names each job's
    assert run_name_from_overrides(overrides, {}, swept=("experiment",)) == "experiment=lenet,conv1.out_channels=16,lr=0.1"
    # how a job executes names no job apart (the README advises blas_threads=null on clusters) ...
    assert short_overrides(["optimizer.lr=0.1", "trainer.blas_threads=null", "trainer.progress=false"]) == ["lr=0.1"]
    # ... unless the sweep varies it
    assert short_overrides(["trainer.blas_threads=1"], swept=("trainer.blas_threads",)) == ["blas_threads=1"]


def test_run_names_tell_keys_with_the_same_last_part_apart():
    """``seed=1 dataset.seed=2`` was named ``seed=1,seed=2``."""
    assert run_name_from_overrides(["seed=1", "dataset.seed=2"], {}) == "seed=1,dataset.seed=2"
    assert short_overrides(["trainer.early_stopping.enabled=true", "trainer.checkpoint.enabled=false",
                            "trainer.epochs=3"]) == [
        "early_stopping.enabled=true", "checkpoint.enabled=false", "epochs=3"]
    # model keys: as far up as differs (a residual block's conv1 against the top-level one)
    assert short_overrides(["model.layers.conv1.out_channels=4", "model.layers.block.conv1.out_channels=8",
                            "model.layers.conv2.out_channels=8"]) == [
        "layers.conv1.out_channels=4", "block.conv1.out_channels=8", "conv2.out_channels=8"]
    # one key given twice is no clash (Hydra keeps the last value)
    assert short_overrides(["trainer.epochs=3", "trainer.epochs=4"]) == ["epochs=3", "epochs=4"]
    # a sweep's parent and its jobs: the same keys, the same names
    assert short_overrides(["+experiment=lenet", "seed=0,1", "dataset.seed=2"], keep_presets=True) == [
        "experiment=lenet", "seed=0,1", "dataset.seed=2"]
    # a last part that says nothing alone keeps its section; Hydra's False reads as typed
    assert short_overrides(["trainer.checkpoint.enabled=False", "dataset.type=npz"]) == [
        "checkpoint.enabled=false", "dataset.type=npz"]
    assert short_overrides(["+x.flags=[True,False]", "+x.title='True story'"]) == [
        "flags=[true,false]", "title='True story'"]


def test_a_sweeps_jobs_log_into_its_parents_experiment_whatever_their_preset_names():
    config = {"experiment_name": "digits_small", "tracking": {"experiment_name": None}}
    job = SweepJob(SweepLink("sqlite:////abs/mlflow.db", "1", "abc", "cnnx", ("experiment",)), None)
    assert logged_in(config, job) == "cnnx"
    assert logged_in(config) == "digits_small"
    old_link = SweepJob(SweepLink("sqlite:////abs/mlflow.db", "1", "abc"), None)
    assert logged_in(config, old_link) == "digits_small"


def test_link_round_trips_and_store_paths_become_absolute(tmp_path):
    link = SweepLink("sqlite:////abs/mlflow.db", "1", "abc", "lenet", ("optimizer.lr", "experiment"))
    link.write(tmp_path / "sweep")
    assert SweepLink.read(tmp_path / "sweep") == link and SweepLink.read(tmp_path) is None
    # a link written before it named the experiment and the swept keys
    (tmp_path / "old" / LINK_FILE).parent.mkdir()
    (tmp_path / "old" / LINK_FILE).write_text(json.dumps(
        {"tracking_uri": "sqlite:////abs/mlflow.db", "experiment_id": "1", "parent_run_id": "abc"}))
    assert SweepLink.read(tmp_path / "old") == SweepLink("sqlite:////abs/mlflow.db", "1", "abc", None, ())
    assert absolute_store_uri("sqlite:///mlflow.db", Path("/w")) == "sqlite:////w/mlflow.db"
    assert absolute_store_uri("sqlite:////data/m.db", Path("/w")) == "sqlite:////data/m.db"
    assert absolute_store_uri("http://127.0.0.1:5000", Path("/w")) == "http://127.0.0.1:5000"


@pytest.mark.slow
def test_a_stopped_sweep_leaves_none_of_its_runs_running(client):
    from cnnx.tracking.sweep_callback import MlflowSweepCallback

    # Ctrl-C on a joblib sweep: the launcher may stop a worker before its job ends its run.
    parent, ids = make_sweep(client, [({"optimizer.lr": 0.01}, {"val_acc": [0.5]}, "FINISHED"),
                                      ({"optimizer.lr": 0.1}, {"val_acc": [0.6]}, "RUNNING")])
    callback = MlflowSweepCallback()
    callback._link = SweepLink(client._tracking_client.tracking_uri, "", parent)
    callback._close("FAILED")
    assert [client.get_run(i).info.status for i in ids] == ["FINISHED", "KILLED"]
    assert client.get_run(parent).info.status == "FAILED"


def test_the_plot_counts_the_children_it_cannot_place():
    from cnnx.tracking.sweep_summary import SweepTable, objective_figure

    rows = [{"run_id": "a", "run_name": "lr=0.1", "status": "FINISHED", "optimizer.lr": "0.1", "best_val_acc": 0.9},
            {"run_id": "b", "run_name": "lr=nan", "status": "FAILED", "optimizer.lr": "nan", "best_val_acc": None}]
    figure = objective_figure(SweepTable("val_acc", "max", ["optimizer.lr"], rows))
    assert figure._suptitle.get_text() == "1 runs (1 more without best_val_acc), objective best_val_acc (max)"
    # a sweep stopped before any epoch: nothing to place, still a figure
    figure = objective_figure(SweepTable("val_acc", "max", ["optimizer.lr"], rows[1:]))
    assert figure._suptitle.get_text() == "0 runs (1 more without best_val_acc), objective best_val_acc (max)"


def test_overrides_too_long_for_a_tag_are_left_to_the_params():
    from cnnx.tracking.sweep_summary import overrides_tag

    assert json.loads(overrides_tag(["optimizer.lr=0.1"])[OVERRIDES_TAG]) == ["optimizer.lr=0.1"]
    assert overrides_tag([f"dataset.path=/data/{'x' * 6000}.npz"]) == {}


def test_columns_of_runs_without_a_swept_tag_leave_out_what_follows_from_the_data():
    from types import SimpleNamespace

    from cnnx.tracking.sweep_summary import swept_columns

    def run(fraction, train_size):
        params = {"dataset.val_fraction": fraction, "data.train_size": train_size, "tracking.uri": "x"}
        return SimpleNamespace(data=SimpleNamespace(params=params, tags={}))

    assert swept_columns([run("0.1", "1131"), run("0.2", "1005")]) == ["dataset.val_fraction"]
    refused = SimpleNamespace(data=SimpleNamespace(params={}, tags={}))  # failed before logging params
    assert swept_columns([run("0.1", "1131"), run("0.1", "1131"), refused]) == []
    progress = [run("0.1", "1131"), run("0.1", "1131")]
    progress[0].data.params["trainer.progress"] = "False"  # joblib jobs draw no bars
    assert swept_columns(progress) == []


def test_a_run_resumed_with_another_setting_is_compared_by_the_setting_it_went_on_with():
    """`cnnx compare` showed the param, which MLflow never changes: a run named epochs=10
    was listed with trainer.epochs 30."""
    from types import SimpleNamespace

    from cnnx.tracking.sweep_summary import RESUMED_WITH_TAG, swept_columns, swept_value

    def run(epochs, resumed_with=None):
        tags = {} if resumed_with is None else {RESUMED_WITH_TAG + "trainer.epochs": resumed_with}
        return SimpleNamespace(data=SimpleNamespace(params={"trainer.epochs": epochs}, tags=tags))

    longer = run("30", resumed_with="10")
    assert swept_value(longer, "trainer.epochs") == "10"
    assert swept_columns([longer, run("10")]) == []
    assert swept_columns([run("30", resumed_with="15"), run("30")]) == ["trainer.epochs"]


def test_the_settings_a_sweeps_children_share_are_those_they_went_on_with():
    """The parent logged trainer.epochs=5 while every child, resumed, went on with 10; MLflow
    never lets that param be corrected."""
    from types import SimpleNamespace

    from cnnx.tracking.sweep_summary import RESUMED_WITH_TAG, shared_settings

    def run(lr):
        params = {"optimizer.lr": lr, "trainer.epochs": "5", "model.name": "lenet5"}
        return SimpleNamespace(data=SimpleNamespace(params=params, tags={RESUMED_WITH_TAG + "trainer.epochs": "10"}))

    assert shared_settings([run("0.1"), run("0.01")], ["optimizer.lr"]) == {"trainer.epochs": "10", "model.name": "lenet5"}


def test_a_process_is_told_from_a_later_one_and_an_ended_one_is_gone():
    import subprocess
    import sys

    assert process_started(os.getpid()) == process_started(os.getpid()) is not None
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    assert process_started(ended.pid) is not None or ended.poll() is not None
    ended.wait()
    assert process_started(ended.pid) is None


def running_sweep(client, driver: dict, jobs=()):
    """A RUNNING parent driven by ``driver`` (its tags) and RUNNING children, each started
    ``start`` seconds ago with its epochs ending ``ends`` seconds ago: ``(start, ends)`` each."""
    from mlflow.entities import Metric

    now = time.time()
    experiment_id = client.create_experiment(f"running{len(client.search_experiments())}")
    parent = client.create_run(experiment_id, run_name="sweep lr=0.1,0.2", tags=driver)
    for n, (start, ends) in enumerate(jobs):
        run = client.create_run(experiment_id, run_name=f"lr=0.{n + 1}", start_time=int((now - start) * 1000),
                                tags={"mlflow.parentRunId": parent.info.run_id})
        client.log_batch(run.info.run_id, metrics=[Metric("train_loss", 0.5, int((now - end) * 1000), step)
                                                   for step, end in enumerate(ends, 1)])
    return client.get_run(parent.info.run_id)


def test_a_sweep_whose_process_runs_on_this_host_is_running_and_one_whose_process_ended_is_not(client):
    import subprocess
    import sys

    parent = running_sweep(client, driver_tags(), jobs=[(5, [3])])
    assert still_running(client, parent) == (
        f"sweep.resume=true: sweep 'sweep lr=0.1,0.2' (parent run {parent.info.run_id}) is still running, in "
        f"process {os.getpid()} on this host ({socket.gethostname()}); wait for it to end, or stop it first "
        f"(Ctrl-C in its terminal, or kill {os.getpid()}), then resume it")
    client.set_terminated(parent.info.run_id, "KILLED")
    assert still_running(client, client.get_run(parent.info.run_id)) is None

    ended = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    tags = {**driver_tags(), PID_TAG: str(ended.pid), PROCESS_STARTED_TAG: process_started(ended.pid)}
    ended.wait()
    # Killed outright a moment ago: its job was active, but its process is known to be gone.
    assert still_running(client, running_sweep(client, tags, jobs=[(5, [3])])) is None


def test_a_sweep_driven_from_another_host_is_running_while_a_job_of_it_is_active(client):
    elsewhere = {HOST_TAG: "login2.cluster", PID_TAG: "4242", PROCESS_STARTED_TAG: "b:1"}
    parent = running_sweep(client, elsewhere, jobs=[(3600, [3590, 3580]), (40, [30, 20])])
    assert still_running(client, parent) == (
        f"sweep.resume=true: sweep 'sweep lr=0.1,0.2' (parent run {parent.info.run_id}) may still be running: "
        "it was started in process 4242 on host login2.cluster, which this host cannot check, and its job "
        "'lr=0.2' was active 20 s ago; wait for it to end, or stop it where it runs first; if it is gone, "
        "resume it in 5 min")
    # Quiet for longer than QUIET_SECONDS, and than twice its epochs: a crashed node.
    assert still_running(client, running_sweep(client, elsewhere, jobs=[(900, [800, 700, 600])])) is None
    # Epochs of 20 minutes: the job is not silent for long yet.
    slow = running_sweep(client, elsewhere, jobs=[(4000, [2800, 1600])])
    assert "job 'lr=0.1' was active 27 min ago" in still_running(client, slow)
    # Resumed a day later with 10-second epochs: the day between is not an epoch.
    resumed = running_sweep(client, elsewhere, jobs=[(90000, [89990, 89980, 420, 410])])
    assert still_running(client, resumed) is None
    # A parent from before the driver was recorded, with a job just started.
    unknown = running_sweep(client, {}, jobs=[(10, [])])
    assert "it was started by a cnnx that did not record its process" in still_running(client, unknown)


def _figure_of(key: str, values: list[str]):
    from cnnx.tracking.sweep_summary import SweepTable, objective_figure

    rows = [{"run_id": str(i), "run_name": f"job{i}", "status": "FINISHED", key: value, "best_val_acc": 0.5 + i / 100}
            for i, value in enumerate(values)]
    figure = objective_figure(SweepTable("val_acc", "max", [key], rows))
    figure.canvas.draw()
    return figure.axes[0]


@pytest.mark.parametrize("values", [["0.01", "0.1"], ["0.0013", "0.004", "0.02", "0.05"]],
                         ids=["two-values-a-decade-apart", "optuna-log-interval"])
def test_the_plot_spreads_values_a_decade_or_more_apart_on_a_log_axis(values):
    # Before: only more than two values a hundredfold apart were; these bunched at one end.
    assert _figure_of("optimizer.lr", values).get_xscale() == "log"


@pytest.mark.parametrize("values", [["0.02", "0.1"], ["-0.1", "1"]], ids=["within-a-decade", "not-positive"])
def test_the_plot_keeps_a_linear_axis_for_values_a_log_axis_would_not_help(values):
    assert _figure_of("optimizer.lr", values).get_xscale() == "linear"


@pytest.mark.parametrize("values", [["4", "8", "16"], ["3", "5"]], ids=["channels", "two-kernel-sizes"])
def test_the_plot_marks_integer_params_at_whole_numbers_only(values):
    axes = _figure_of("model.layers.conv1.out_channels", values)
    low, high = axes.get_xlim()
    ticks = [t for t in axes.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks  # was 7.5, 12.5, ...


@pytest.mark.slow
def test_an_experiments_table_leaves_out_the_attempts_a_resumed_sweep_ran_again(client):
    """``cnnx compare EXPERIMENT`` listed them while ``cnnx compare PARENT`` did not."""
    from cnnx.compare import find_runs

    parent, ids = make_sweep(client, [
        ({"optimizer.lr": 0.01}, {"val_acc": [0.5]}, "FAILED"),
        ({"optimizer.lr": 0.01}, {"val_acc": [0.9]}, "FINISHED"),
    ], overrides=[["optimizer.lr=0.01"], ["optimizer.lr=0.01", "sweep.resume=true"]])
    experiment = client.get_run(parent).info.experiment_id
    _, runs, _ = find_runs(client, client.get_experiment(experiment).name)
    shown = {run.info.run_id for run in runs}
    assert ids[1] in shown and ids[0] not in shown


def test_a_column_of_numbers_with_missing_values_stays_right_aligned():
    from cnnx.compare import format_table

    lines = format_table(["run_name", "best_val_acc"], [{"run_name": "a", "best_val_acc": 0.5},
                                                        {"run_name": "bb", "best_val_acc": None}]).splitlines()
    assert lines == ["run_name  best_val_acc", "a               0.5000", "bb                   -"]


@pytest.mark.slow
def test_a_best_child_that_collapsed_after_its_best_epoch_is_noted(client):
    """Ranked by its peak, its logged model and test figures were the collapsed last epoch's
    (0.099 on the digits), and nothing said so."""
    from cnnx.tracking.sweep_summary import last_epoch_note

    stopping = "trainer.early_stopping."
    collapsed = {"val_acc": [0.5, 0.89, 0.3, 0.1]}
    parent, ids = make_sweep(client, [
        ({"optimizer.lr": 0.1, stopping + "enabled": False}, collapsed, "FINISHED"),
        ({"optimizer.lr": 0.01}, {"val_acc": [0.5, 0.88, 0.87]}, "FINISHED"),
        # early stopping on, but the run ended within its patience; or on, without restoring
        ({stopping + "enabled": True, stopping + "restore_best": True, stopping + "patience": 5}, collapsed, "FINISHED"),
        ({stopping + "enabled": True, stopping + "restore_best": False}, collapsed, "FINISHED"),
    ])
    peak = ("ranks by its epoch 2 (val_acc=0.8900), but its logged model and test figures are its last epoch's "
            "(epoch 4, val_acc=0.1000); ")
    assert last_epoch_note(client, ids[0], "lr=0.1", "val_acc") == (
        f"cnnx: note: 'lr=0.1' {peak}trainer.early_stopping.enabled=true hands back the best epoch's weights when it "
        "stops a run")
    assert last_epoch_note(client, ids[1], "lr=0.01", "val_acc") is None
    assert last_epoch_note(client, ids[2], "a", "val_acc") == (
        f"cnnx: note: 'a' {peak}early stopping hands them back only when it stops the run, after 5 epochs without "
        "improvement (trainer.early_stopping.patience)")
    assert last_epoch_note(client, ids[3], "b", "val_acc").endswith(
        "trainer.early_stopping.restore_best=true hands back the best epoch's weights when early stopping stops a run")
    client.set_tag(ids[0], "cnnx.early_stopping.restored_best", "true")
    assert last_epoch_note(client, ids[0], "lr=0.1", "val_acc") is None


def test_a_job_its_launcher_reruns_in_its_folder_continues_its_own_attempt_not_a_twins(client, tmp_path):
    """SLURM requeues a preempted job, Ray retries one whose worker died: in its own folder.
    A sweep may hold one config twice (Optuna drawing a trial again); the newest stopped twin
    was taken, and the rerun refused its own checkpoints as another run's."""
    from cnnx.tracking.sweep_job import SweepJob, earlier_attempt
    from cnnx.tracking.sweep_link import SweepLink

    config = {"seed": 0, "tracking": {"enabled": True}, "sweep": {"resume": False},
              "trainer": {"monitor": "val_acc", "checkpoint": {"enabled": True, "dir": None}}}
    fingerprint = config_fingerprint(config)
    experiment_id = client.create_experiment("rerun in place")
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    own, twin = tmp_path / "1", tmp_path / "4"
    for number, (folder, started) in enumerate(((own, 1_000), (twin, 2_000))):
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "epoch-0002.npz").write_bytes(b"")
        run = client.create_run(experiment_id, start_time=started, tags={
            "mlflow.parentRunId": parent, FINGERPRINT_TAG: fingerprint,
            CHECKPOINT_DIR_TAG: str(folder / "checkpoints")})
        client.set_terminated(run.info.run_id, "KILLED")
    job = SweepJob(SweepLink(client.tracking_uri, experiment_id, parent, "rerun in place"), None, True, 1)

    assert earlier_attempt(job, config, "rerun in place", str(own)).checkpoint_dir == own / "checkpoints"
    assert earlier_attempt(job, config, "rerun in place", str(twin)).checkpoint_dir == twin / "checkpoints"
    # a folder without checkpoints is a first attempt: nothing is looked up
    assert earlier_attempt(job, config, "rerun in place", str(tmp_path / "7")).checkpoint_dir is None
