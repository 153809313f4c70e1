"""A checkpoint written before the tracking process reported its run id still leads the
resumed run back to that MLflow run, through the ``cnnx.run_key`` tag."""

from __future__ import annotations

import numpy as np

from cnnx.engine.model import build_model
from cnnx.tracking.background import TrainerView, _History
from cnnx.tracking.mlflow_tracker import RESUMED_FROM_TAG, RUN_KEY_TAG, MlflowTracker
from cnnx.tracking.sweep_summary import RESUMED_WITH_TAG

SPEC = {"conv1": {"type": "conv2d", "out_channels": 2, "kernel_size": 3}, "flatten": {"type": "flatten"},
        "fc": {"type": "dense", "out_features": 3}}


def _tracker(uri, tmp_path, config=None, options=None, **state):
    tracker = MlflowTracker(experiment_name="keyed", config=config or {"seed": 0}, config_yaml="seed: 0\n",
                            tracking_uri=uri, log_plots=False, log_model=False, spill_dir=tmp_path / "unsent",
                            **(options or {}))
    if state:
        tracker.load_state_dict(state)
    return tracker


def _view(epochs):
    model = build_model(SPEC, (1, 6, 6), rng=np.random.default_rng(0))
    return TrainerView(model=model, epoch=len(epochs), history=_History(list(epochs)))


def test_a_resumed_run_without_id_finds_its_run_by_key(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # the store's artifacts go to ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _tracker(uri, tmp_path)
    first.tags[RUN_KEY_TAG] = "key-1"
    first.on_fit_start(_view([]))
    epoch_1 = {"train_loss": 1.0, "val_acc": 0.5}
    first.on_epoch_end(_view([epoch_1]), 1, epoch_1)
    # killed here; its checkpoint holds the key but not the id

    other = _tracker(uri, tmp_path)  # another run in the same experiment, another key
    other.tags[RUN_KEY_TAG] = "key-2"
    other.on_fit_start(_view([]))

    epoch_2 = {"train_loss": 0.5, "val_acc": 0.75}
    resumed = _tracker(uri, tmp_path, run_id=None, run_key="key-1")
    resumed.on_fit_start(_view([epoch_1]))
    assert resumed.run_id == first.run_id
    resumed.on_epoch_end(_view([epoch_1, epoch_2]), 2, epoch_2)
    resumed.on_fit_end(_view([epoch_1, epoch_2]), {})
    client = MlflowClient(uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_acc")] == [(1, 0.5), (2, 0.75)]
    assert client.get_run(other.run_id).info.status == "RUNNING"


def test_a_fresh_run_with_a_key_is_a_new_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = _tracker(uri, tmp_path)
    tracker.tags[RUN_KEY_TAG] = "key-3"
    tracker.on_fit_start(_view([]))
    again = _tracker(uri, tmp_path)
    again.tags[RUN_KEY_TAG] = "key-3"  # same key, but not resuming: never continue another run
    again.on_fit_start(_view([]))
    assert again.run_id != tracker.run_id


def test_a_resumed_run_that_was_never_created_logs_the_checkpoints_epochs(tmp_path, monkeypatch):
    """Killed before the tracking process had created its run (it was still importing
    MLflow), the resumed run is a new one: it used to start without the epochs trained before."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    epoch_1, epoch_2 = {"train_loss": 1.0, "val_acc": 0.5}, {"train_loss": 0.5, "val_acc": 0.75}
    resumed = _tracker(uri, tmp_path, run_id=None, run_key="never-created")
    resumed.on_fit_start(_view([epoch_1]))
    resumed.on_epoch_end(_view([epoch_1, epoch_2]), 2, epoch_2)
    resumed.on_fit_end(_view([epoch_1, epoch_2]), {})
    client = MlflowClient(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(resumed.run_id, "val_acc")] == [(1, 0.5), (2, 0.75)]


EPOCH_1 = {"train_loss": 1.0, "val_acc": 0.5}


def _one_epoch_run(tmp_path, monkeypatch):
    """(store uri, a tracker whose run has logged EPOCH_1 and is still open)."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _tracker(uri, tmp_path)
    first.on_fit_start(_view([]))
    first.on_epoch_end(_view([EPOCH_1]), 1, EPOCH_1)
    return uri, first


def test_a_resumed_run_that_finishes_drops_the_error_of_its_interruption(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri, first = _one_epoch_run(tmp_path, monkeypatch)
    first.finish_with_error("KILLED", "TrainingInterrupted: SIGINT received; stopped after epoch 2, batch 3")
    client = MlflowClient(uri)
    assert "error" in client.get_run(first.run_id).data.tags

    resumed = _tracker(uri, tmp_path, run_id=first.run_id)
    resumed.on_fit_start(_view([EPOCH_1]))
    resumed.on_fit_end(_view([EPOCH_1]), {})
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags


def test_resuming_a_run_that_had_finished_leaves_its_record_alone(tmp_path, monkeypatch):
    """Resuming from the last checkpoint of a finished run reopened it and logged the report
    again: every kernel and feature-map image twice, the model and weights again."""
    from mlflow import MlflowClient

    uri, first = _one_epoch_run(tmp_path, monkeypatch)
    first.on_fit_end(_view([EPOCH_1]), {"test_acc": 0.5})
    client = MlflowClient(uri)
    before = client.get_run(first.run_id)

    done = _view([EPOCH_1])
    done.finished_training = True
    resumed = _tracker(uri, tmp_path, run_id=first.run_id)
    resumed.on_fit_start(done)
    resumed.on_fit_end(done, {"test_acc": 0.5})
    after = client.get_run(first.run_id)
    assert (after.info.status, after.info.end_time) == ("FINISHED", before.info.end_time)


def test_a_resumed_run_tags_the_settings_it_changed(tmp_path, monkeypatch):
    """MLflow keeps a param's first value: a run resumed with more epochs showed the old count."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _tracker(uri, tmp_path, {"seed": 0, "trainer": {"epochs": 3, "resume": False}})
    first.on_fit_start(_view([]))
    first.on_epoch_end(_view([EPOCH_1]), 1, EPOCH_1)

    longer = {"seed": 0, "trainer": {"epochs": 5, "resume": True}, "tracking": {"log_plots": False}}
    _tracker(uri, tmp_path, longer, run_id=first.run_id).on_fit_start(_view([EPOCH_1]))
    run = MlflowClient(uri).get_run(first.run_id)
    resumed_with = {k: v for k, v in run.data.tags.items() if k.startswith(RESUMED_WITH_TAG)}
    assert resumed_with == {"cnnx.resumed_with.trainer.epochs": "5"}
    params = {k: v for k, v in run.data.params.items() if k != "model.num_parameters"}  # the model's, not a setting
    assert params == {"seed": "0", "trainer.epochs": "3", "trainer.resume": "False",
                      "tracking.log_plots": "False"}  # a setting new to the run: a param

    again = {**longer, "trainer": {"epochs": 3, "resume": True}}  # back to the logged value
    _tracker(uri, tmp_path, again, run_id=first.run_id).on_fit_start(_view([EPOCH_1]))
    tags = MlflowClient(uri).get_run(first.run_id).data.tags
    assert not [k for k in tags if k.startswith(RESUMED_WITH_TAG)]


def test_a_checkpoint_file_its_run_went_past_on_disk_only_starts_a_new_run(tmp_path, monkeypatch):
    """Stopped in epoch 2 (a checkpoint of epoch 2, batch 5 beside epoch 1's), the run has logged
    only epoch 1; resumed from epoch 1's file, it would still fork that run's checkpoints."""
    from mlflow import MlflowClient

    uri, first = _one_epoch_run(tmp_path, monkeypatch)
    older = str(tmp_path / "run" / "epoch-0001.npz")
    options = {"resume_file": older, "newer_checkpoint": str(tmp_path / "run" / "epoch-0002-batch-0005.npz")}
    branch = _tracker(uri, tmp_path, options=options, run_id=first.run_id, run_key="key-of-first")
    branch.on_fit_start(_view([EPOCH_1]))
    assert branch.run_id != first.run_id and branch.tags[RUN_KEY_TAG] != "key-of-first"
    client = MlflowClient(uri)
    tags = client.get_run(branch.run_id).data.tags
    assert (tags[RESUMED_FROM_TAG], tags["cnnx.resumed_from.checkpoint"]) == (first.run_id, older)
    assert [(m.step, m.value) for m in client.get_metric_history(branch.run_id, "val_acc")] == [(1, 0.5)]
    assert client.get_run(first.run_id).info.status == "RUNNING"


def test_the_newest_checkpoint_file_of_a_run_continues_it(tmp_path, monkeypatch):
    uri, first = _one_epoch_run(tmp_path, monkeypatch)
    options = {"resume_file": str(tmp_path / "run" / "epoch-0001.npz")}
    resumed = _tracker(uri, tmp_path, options=options, run_id=first.run_id)
    resumed.on_fit_start(_view([EPOCH_1]))
    assert resumed.run_id == first.run_id and resumed.branched is None


def test_a_checkpoint_records_its_store_the_same_from_any_working_directory(tmp_path, monkeypatch):
    from cnnx.tracking.sqlite_store import absolute_store_uri

    monkeypatch.chdir(tmp_path)
    assert absolute_store_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_store_uri("sqlite:///runs/m.db?timeout=5") == f"sqlite:///{tmp_path}/runs/m.db?timeout=5"
    assert absolute_store_uri(f"sqlite:///{tmp_path}/../x.db") == f"sqlite:///{tmp_path.parent}/x.db"
    assert absolute_store_uri("mlruns") == str(tmp_path / "mlruns")
    for kept in ("sqlite:///:memory:", "http://127.0.0.1:5000", "file:///abs/mlruns", "databricks",
                 "postgresql://u@h/db"):
        assert absolute_store_uri(kept) == kept


def test_an_epoch_trained_again_after_a_resume_logs_its_kernel_image_once(tmp_path, monkeypatch):
    """Resumed from a checkpoint older than the last logged epoch, the replayed epochs' figures
    were de-duplicated but their kernel images were logged a second time."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _tracker(uri, tmp_path)
    first.on_fit_start(_view([]))
    epochs = [{"train_loss": 1.0 / n, "val_acc": 0.1 * n} for n in (1, 2)]
    for n in (1, 2):
        first.on_epoch_end(_view(epochs[:n]), n, epochs[n - 1])
    first.outbox.drain(30)
    # killed here; the newest checkpoint was of epoch 1, so epoch 2 is trained again
    resumed = _tracker(uri, tmp_path, run_id=first.run_id)
    resumed.on_fit_start(_view(epochs[:1]))
    resumed.on_epoch_end(_view(epochs), 2, epochs[1])
    third = {"train_loss": 0.3, "val_acc": 0.3}
    resumed.on_epoch_end(_view([*epochs, third]), 3, third)
    resumed.on_fit_end(_view([*epochs, third]), {})
    client = MlflowClient(uri)
    images = [a.path for a in client.list_artifacts(first.run_id, "images")]
    steps = sorted(int(p.split("+step+")[1].split("+")[0]) for p in images if p.endswith(".png") and "kernels~" in p)
    assert steps == [0, 1, 2, 3]  # 0: the initial kernels


def _run_with_one_epoch(tmp_path):
    """A run that logged its first epoch, then (the caller says how) stopped."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _tracker(uri, tmp_path)
    first.on_fit_start(_view([]))
    epoch_1 = {"train_loss": 1.0, "val_acc": 0.5}
    first.on_epoch_end(_view([epoch_1]), 1, epoch_1)
    first.outbox.drain(30)
    return uri, first, epoch_1


def test_a_continued_run_marks_failed_the_model_its_killed_process_left_pending(tmp_path, monkeypatch):
    """Killed while logging its report, a run left a PENDING model, which the Models tab listed
    as the run's beside the one the continued run then logged."""
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus

    monkeypatch.chdir(tmp_path)
    uri, first, epoch_1 = _run_with_one_epoch(tmp_path)
    client = MlflowClient(uri)
    experiment_id = client.get_run(first.run_id).info.experiment_id
    pending = client.create_logged_model(experiment_id, source_run_id=first.run_id, name="model")
    other_run = client.create_run(experiment_id).info.run_id
    elsewhere = client.create_logged_model(experiment_id, source_run_id=other_run, name="model")
    # killed here, during the report
    resumed = _tracker(uri, tmp_path, run_id=first.run_id)
    resumed.on_fit_start(_view([epoch_1]))
    assert client.get_logged_model(pending.model_id).status == LoggedModelStatus.FAILED
    assert client.get_logged_model(elsewhere.model_id).status == LoggedModelStatus.PENDING  # another run's


def test_a_continued_run_with_an_mlflow_2_client_marks_no_model(tmp_path, monkeypatch):
    """MLflow 2 has no logged models: the import of LoggedModelStatus failed, and the resume with it."""
    import mlflow.entities

    monkeypatch.chdir(tmp_path)
    uri, first, epoch_1 = _run_with_one_epoch(tmp_path)
    monkeypatch.delattr(mlflow.entities, "LoggedModelStatus")
    resumed = _tracker(uri, tmp_path, run_id=first.run_id)
    resumed.on_fit_start(_view([epoch_1]))
    assert resumed.run_id == first.run_id
