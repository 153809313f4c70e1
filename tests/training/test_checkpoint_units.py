"""Checkpoint files, in-process (fast): writing, reading, keeping and resuming them."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tiny_trainer import SPEC, make_trainer, tiny_data

from cnnx.engine.model import build_model
from cnnx.errors import CheckpointError
from cnnx.training.checkpoint import Checkpoint, check_writable, list_checkpoints
from cnnx.training.checkpoint_file import read_checkpoint, write_checkpoint


def test_write_is_atomic_and_read_refuses_pickles_truncation_and_foreign_files(tmp_path):
    path = write_checkpoint(tmp_path / "a.npz", {"w": np.arange(3.0)}, {"epoch": 1})
    arrays, header = read_checkpoint(path)
    assert np.array_equal(arrays["w"], np.arange(3.0)) and header["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temporary file left

    np.save(tmp_path / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "pickled.npz", __cnnx_header__=np.frombuffer(b"{}", np.uint8),
             w=np.array([{"x": 1}], dtype=object))
    cases = {
        "truncated.npz": path.read_bytes()[:40],
        "text.npz": b"hello",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.savez(tmp_path / "foreign.npz", x=np.zeros(2))
    for name, fragment in [("truncated.npz", "truncated"), ("text.npz", "truncated"),
                           ("foreign.npz", "not a cnnx checkpoint"), ("pickled.npz", "pickle"),
                           ("objects.npy", "pickle"), ("missing.npz", "not found")]:
        with pytest.raises(CheckpointError) as caught:
            read_checkpoint(tmp_path / name)
        assert name in str(caught.value) and fragment in str(caught.value), str(caught.value)


def test_state_round_trip_continues_identically(tmp_path):
    from cnnx.data.splits import DataSplits

    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    y = np.arange(24) % 3
    data = DataSplits(train=(x, y), val=(x[:6], y[:6]), test=(x[:6], y[:6]), classes=["a", "b", "c"],
                      input_shape=(1, 5, 5), name="t")
    straight = make_trainer(epochs=3)
    straight.fit(data)

    first = make_trainer(epochs=3, callbacks=[Checkpoint(tmp_path, keep_last=1)])
    first.epochs = 1
    first.fit(data)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch-0001.npz"]
    second = make_trainer(epochs=3, callbacks=[Checkpoint(tmp_path, keep_last=1, resume=True)])
    second.fit(data)
    assert second.history.epochs[-1]["train_loss"] == straight.history.epochs[-1]["train_loss"]
    for key, value in straight.model.state_dict().items():
        assert np.array_equal(second.model.state_dict()[key], value), key

    other = make_trainer()
    other.model = build_model({**SPEC, "fc": {"type": "dense", "out_features": 4}}, (1, 5, 5))
    with pytest.raises(CheckpointError, match="fc.weight"):
        Checkpoint(tmp_path, resume=True).on_fit_start(other)


def test_keeps_the_last_n_and_the_best(tmp_path):
    trainer = make_trainer(epochs=6)
    checkpoint = Checkpoint(tmp_path, keep_last=2, monitor="val_acc")
    for epoch, val_acc in enumerate([0.5, 0.9, 0.6, 0.7, 0.8, 0.85], 1):
        trainer.epoch = epoch
        checkpoint.on_epoch_end(trainer, epoch, {"val_acc": val_acc})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch-0002.npz", "epoch-0005.npz", "epoch-0006.npz"]


def test_a_partial_epoch_sorts_before_that_epoch_complete(tmp_path):
    for name in ["epoch-0004.npz", "epoch-0004-batch-0012.npz", "epoch-0003.npz", "epoch-0005-batch-0001.npz"]:
        (tmp_path / name).write_bytes(b"")
    # Resuming takes the last of these: a finished epoch 4 is newer than its batch 12.
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "epoch-0003.npz", "epoch-0004-batch-0012.npz", "epoch-0004.npz", "epoch-0005-batch-0001.npz"]


@pytest.mark.parametrize("stopped_early", [False, True])
def test_the_last_epoch_is_saved_off_the_every_n_epochs_rhythm(tmp_path, stopped_early):
    from cnnx.training.early_stopping import EarlyStopping

    # min_delta above any loss: only epoch 1 improves, so patience 1 stops the run at epoch 2.
    stopping = [EarlyStopping("train_loss", min_delta=1e9, patience=1)] if stopped_early else []
    trainer = make_trainer(epochs=5, callbacks=[*stopping, Checkpoint(tmp_path, every_n_epochs=3, keep_last=5)])
    trainer.fit(tiny_data())
    expected = ["epoch-0002.npz"] if stopped_early else ["epoch-0003.npz", "epoch-0005.npz"]
    assert [p.name for p in list_checkpoints(tmp_path)] == expected


def test_garbage_is_not_called_a_pickle_and_warnings_come_only_before_a_fallback(tmp_path):
    import pickle

    (tmp_path / "random.npz").write_bytes(bytes(range(7, 250)))
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"w": 1}))
    for name, reason in [("random.npz", "(neither an .npz (zip) archive nor an .npy array)"), ("pickle.npz", "a Python pickle")]:
        with pytest.raises(CheckpointError) as caught:
            read_checkpoint(tmp_path / name)
        assert reason in str(caught.value), str(caught.value)

    trainer = make_trainer(epochs=1)
    (tmp_path / "epoch-0001.npz").write_bytes(b"\x00" * 100)
    (tmp_path / "epoch-0002.npz").write_bytes(b"\x00" * 100)
    warnings = []
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        Checkpoint(tmp_path, resume=True, warn=warnings.append).on_fit_start(trainer)
    assert warnings == []  # the one error line names both files; no warning repeats it

    good = make_trainer(epochs=1, callbacks=[Checkpoint(tmp_path / "good")])
    good.fit(tiny_data())
    (tmp_path / "good" / "epoch-0002-batch-0003.npz").write_bytes(b"\x00" * 100)
    lines = []
    resumed = make_trainer(epochs=2, callbacks=[Checkpoint(tmp_path / "good", resume=True, warn=warnings.append)])
    resumed.log = lines.append
    resumed.callbacks[0].on_fit_start(resumed)
    assert len(warnings) == 1 and "falling back to 'epoch-0001.npz'" in warnings[0]
    assert lines[-1].endswith("epoch-0001.npz (after epoch 1)")


def test_an_interrupted_epoch_is_named_as_the_signal_named_it(tmp_path):
    from cnnx.training.trainer import EpochProgress

    trainer = make_trainer(epochs=3, callbacks=[Checkpoint(tmp_path)])
    trainer.epoch, trainer.progress_state = 2, EpochProgress(order=np.arange(24), batches_done=4)
    trainer.history.epochs = [{"train_loss": 1.0}]
    trainer.callbacks[0].save(trainer)  # what SIGINT during epoch 2, batch 4 leaves
    del trainer  # ... once its process has ended, which releases the folder
    lines = []
    resumed = make_trainer(epochs=3, callbacks=[Checkpoint(tmp_path, resume=True)])
    resumed.log = lines.append
    resumed.callbacks[0].on_fit_start(resumed)
    assert lines[-1].endswith("epoch-0002-batch-0004.npz (epoch 2, after batch 4)")


def test_a_run_stopped_between_epochs_does_not_resume_with_as_many_epochs_as_it_has(tmp_path):
    """Resumed with trainer.epochs equal to the epochs it had done, a run stopped between them
    was taken for finished: the test metrics of a half-trained model, the run FINISHED."""
    import os
    import signal

    from cnnx.training.callbacks import Callback
    from cnnx.training.signals import TrainingInterrupted

    class SignalAfterEpoch1(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        make_trainer(epochs=3, callbacks=[Checkpoint(tmp_path), SignalAfterEpoch1()]).fit(tiny_data())
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch-0001.npz"]
    with pytest.raises(CheckpointError) as caught:
        Checkpoint(tmp_path, resume=True).on_fit_start(make_trainer(epochs=1))
    assert str(caught.value) == (
        f"trainer.epochs=1 is too few to resume checkpoint '{tmp_path / 'epoch-0001.npz'}' (after epoch 1 of 3): "
        f"the run would end unfinished, yet FINISHED in MLflow; accepted: trainer.epochs >= 2 (3 trains it as it "
        f"was started)")
    Checkpoint(tmp_path, resume=True).on_fit_start(make_trainer(epochs=2))  # to train shorter is allowed


def test_a_full_disk_stops_the_run_in_one_line_and_leaves_no_partial_file(tmp_path):
    import resource

    trainer = make_trainer(epochs=2, callbacks=[Checkpoint(tmp_path)])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Files may not grow past 1 kB, as on a full disk: writes fail (EFBIG; Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    try:
        with pytest.raises(CheckpointError) as caught:
            trainer.fit(tiny_data())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(caught.value)
    assert message.startswith("trainer.checkpoint.dir: cannot write checkpoint") and "epoch-0001.npz" in message
    assert "\n" not in message and list(tmp_path.iterdir()) == []


def test_resuming_with_a_changed_config_is_refused_naming_the_key(tmp_path):
    """A changed learning rate or seed used to be taken silently: the resumed run continued
    the MLflow run whose params still showed the old values."""
    from cnnx.app import resumable_config

    config = {"seed": 0, "optimizer": {"type": "sgd", "lr": 0.05}, "trainer": {"epochs": 2, "resume": False},
              "tracking": {"log_plots": True}}
    first = make_trainer(epochs=1, callbacks=[Checkpoint(tmp_path, config=resumable_config(config))])
    first.fit(tiny_data())

    longer = {**config, "trainer": {"epochs": 5, "resume": True}, "tracking": {"log_plots": False}}
    Checkpoint(tmp_path, resume=True, config=resumable_config(longer)).on_fit_start(make_trainer(epochs=5))

    changed = {**config, "seed": 3, "optimizer": {"type": "adam", "lr": 0.05}}
    with pytest.raises(CheckpointError) as caught:
        Checkpoint(tmp_path, resume=True, config=resumable_config(changed)).on_fit_start(make_trainer())
    message = str(caught.value)
    assert message.startswith("trainer.resume: the config differs from checkpoint")
    assert "in optimizer.type=adam (checkpoint: sgd), seed=3 (checkpoint: 0);" in message
    assert "so only trainer.epochs, early stopping's options while it is off and where it runs may change" in message
    # the CLI's: every setting left out of the comparison (blas_threads and others were not said)
    from cnnx.app import RESUMABLE_CHANGES, resumable_keys_shown

    shown = resumable_keys_shown({"experiment_name": "x", "model": {"name": "m"}, "tracking": {"uri": "u"},
                                  "trainer": {"epochs": 2, "checkpoint": {"keep_last": 2}, "blas_threads": 1,
                                              "eval_batch_size": 64, "progress": None, "resume": True}})
    assert shown == ("experiment_name", "model.name", "trainer.epochs", "trainer.eval_batch_size", "trainer.progress",
                     "trainer.checkpoint.*", "trainer.blas_threads", "tracking.*")
    assert len(shown) == len(RESUMABLE_CHANGES) - 2  # all but trainer.resume and sweep


def test_a_checkpoint_from_before_a_setting_existed_resumes_while_it_keeps_its_earlier_behaviour(tmp_path):
    """dataset.layout came later: every npz checkpoint written before it was refused as
    'differs from checkpoint in dataset.layout=... (checkpoint: (absent))'."""
    from cnnx.app import resumable_config

    config = {"seed": 0, "dataset": {"type": "npz", "path": "x.npz"}, "trainer": {"epochs": 2, "resume": False}}
    make_trainer(epochs=1, callbacks=[Checkpoint(tmp_path, config=resumable_config(config))]).fit(tiny_data())
    now = {**config, "dataset": {**config["dataset"], "layout": "auto"}, "trainer": {"epochs": 2, "resume": True}}
    Checkpoint(tmp_path, resume=True, config=resumable_config(now)).on_fit_start(make_trainer(epochs=2))
    other = {**now, "dataset": {**now["dataset"], "layout": "nhwc"}}
    with pytest.raises(CheckpointError, match=r"in dataset.layout=nhwc \(checkpoint: auto\)"):
        Checkpoint(tmp_path, resume=True, config=resumable_config(other)).on_fit_start(make_trainer(epochs=2))


def _stopping(enabled, monitor, patience=5):
    return {"enabled": enabled, "monitor": monitor, "mode": "auto", "patience": patience, "min_delta": 0.0,
            "restore_best": True}


def test_early_stoppings_options_while_it_is_off_do_not_refuse_a_resume(tmp_path):
    """cnnx 0.2.4 made the monitor follow trainer.monitor: every checkpoint of an earlier cnnx
    was refused ("differs in trainer.early_stopping.monitor=val_acc (checkpoint: val_loss) ... drop
    the override"), though early stopping was off and the user had typed nothing."""
    from cnnx.app import resumable_config

    def config(stopping, resume=False):
        return {"seed": 0, "trainer": {"epochs": 2, "resume": resume, "early_stopping": stopping}}

    make_trainer(epochs=1, callbacks=[Checkpoint(tmp_path, config=resumable_config(config(_stopping(False, "val_loss"))))]
                 ).fit(tiny_data())
    now = resumable_config(config(_stopping(False, "val_acc", patience=9), resume=True))
    Checkpoint(tmp_path, resume=True, config=now).on_fit_start(make_trainer(epochs=2))
    # turned on, it decides the result: refused, naming it
    on = resumable_config(config(_stopping(True, "val_loss"), resume=True))
    with pytest.raises(CheckpointError, match=r"in trainer.early_stopping.enabled=True \(checkpoint: False\); "):
        Checkpoint(tmp_path, resume=True, config=on).on_fit_start(make_trainer(epochs=2))


def test_a_changed_default_is_named_with_the_setting_that_continues_the_run(tmp_path):
    from cnnx.app import resumable_config

    def config(monitor, resume=False):
        return {"seed": 0, "trainer": {"epochs": 2, "resume": resume, "early_stopping": _stopping(True, monitor)}}

    make_trainer(epochs=1, callbacks=[Checkpoint(tmp_path, config=resumable_config(config("val_loss")))]).fit(tiny_data())
    with pytest.raises(CheckpointError) as caught:
        Checkpoint(tmp_path, resume=True, config=resumable_config(config("val_acc", True))).on_fit_start(make_trainer())
    assert str(caught.value).endswith("(a default changed in cnnx 0.2.4: add trainer.early_stopping.monitor=val_loss "
                                      "to continue the run as it trained)")


def test_a_run_still_training_in_a_folder_refuses_a_second_one_there(tmp_path):
    """A resume started while the run still trained (taken for dead, or requeued by a scheduler)
    was accepted: both logged every epoch into one MLflow run, and the second deleted the first's
    checkpoint half-written, which then blamed the disk."""
    training = make_trainer(epochs=2, callbacks=[Checkpoint(tmp_path)])
    training.callbacks[0].on_fit_start(training)
    training.callbacks[0].save(training)
    second = make_trainer(epochs=2, callbacks=[Checkpoint(tmp_path, resume=True)])
    with pytest.raises(CheckpointError, match=r"^trainer.checkpoint.dir: '.*' is in use by a run still training"):
        second.fit(tiny_data())
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0000.npz"]
    training.callbacks[0].on_fit_end(training, {})  # it ended: the folder is free again
    make_trainer(epochs=2, callbacks=[Checkpoint(tmp_path, resume=True)]).fit(tiny_data())


def test_a_header_that_is_not_json_is_a_one_line_checkpoint_error_and_leaves_no_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"^checkpoint '.*a\.npz' cannot be written: its header is not JSON "
                                              r"\(Object of type int64 is not JSON serializable\)$"):
        write_checkpoint(tmp_path / "a.npz", {"w": np.arange(3.0)}, {"classes": [np.int64(1)]})
    assert list(tmp_path.iterdir()) == []


def test_class_names_handed_in_as_numpy_labels_are_kept_as_text_which_checkpoints_write_as_json():
    """A loader handing np.unique(y) as its classes crashed the first checkpoint (NumPy
    integers are not JSON) with a traceback."""
    from cnnx.data.splits import DataSplits

    data = tiny_data()
    data = DataSplits(train=data.train, val=data.val, test=data.test, classes=list(np.unique(data.train[1])),
                      input_shape=(1, 5, 5), name="t")
    assert data.classes == ["0", "1", "2"] and all(type(name) is str for name in data.classes)


def test_a_callback_failing_on_the_error_does_not_keep_the_others_from_theirs(tmp_path, capsys):
    """A checkpoint that could not be written on Ctrl-C raised out of on_fit_error, and the
    tracker after it never ended its MLflow run: it stayed RUNNING."""
    from cnnx.training.callbacks import Callback

    seen = []

    class Stop(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            raise KeyboardInterrupt

    class Broken(Callback):
        def on_fit_error(self, trainer, error):
            raise TypeError("cannot handle it")

    class Tracker(Callback):
        def on_fit_error(self, trainer, error):
            seen.append(type(error).__name__)

    trainer = make_trainer(epochs=2, callbacks=[Stop(), Broken(), Tracker()])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(tiny_data())
    assert seen == ["KeyboardInterrupt"]
    assert capsys.readouterr().err == ("cnnx: warning: Broken could not handle the error that stopped training: "
                                       "TypeError: cannot handle it\n")


def test_the_writability_probe_leaves_no_folder_it_made(tmp_path):
    """A run refused after the probe (a resume with no checkpoint) left an empty checkpoints/."""
    check_writable(tmp_path / "run" / "checkpoints", "trainer.checkpoint.dir")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    check_writable(tmp_path / "kept", "trainer.checkpoint.dir")
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and not any((tmp_path / "kept").iterdir())


def test_a_copy_of_a_checkpoint_callback_holds_no_lock_of_its_own(tmp_path):
    """A deepcopy shared the lock's descriptor: collecting the copy closed it, which released the
    original's lock (or closed a file that had reused the number), and the fit's end failed."""
    import copy
    import gc

    from cnnx.folder_lock import FolderBusy, lock_folder

    checkpoint = Checkpoint(tmp_path)
    trainer = make_trainer(epochs=1, callbacks=[checkpoint])
    checkpoint.on_fit_start(trainer)
    copy.deepcopy(checkpoint)
    gc.collect()
    with pytest.raises(FolderBusy):  # still held by the original
        lock_folder(tmp_path, wait=False)
    checkpoint.on_fit_end(trainer, {})
    os.close(lock_folder(tmp_path, wait=False))
