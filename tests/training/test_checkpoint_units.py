"""Checkpoint files, the update guard and the tracking outbox, in-process (fast)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import list_artifacts

from cnnx.engine.model import build_model
from cnnx.engine.optim.sgd import SGD
from cnnx.errors import CheckpointError
from cnnx.tracking.outbox import SPILL_FILE, Outbox, Pending
from cnnx.training.checkpoint import Checkpoint, list_checkpoints
from cnnx.training.checkpoint_file import read_checkpoint, write_checkpoint
from cnnx.training.divergence import TrainingDiverged, UpdateGuard
from cnnx.training.trainer import Trainer

SPEC = {
    "conv": {"type": "conv2d", "out_channels": 2, "kernel_size": 3},
    "drop": {"type": "dropout", "p": 0.3},
    "flat": {"type": "flatten"},
    "fc": {"type": "dense", "out_features": 3},
}


def make_trainer(epochs=2, **kwargs):
    from cnnx.engine.losses.cross_entropy import CrossEntropyLoss

    model = build_model(SPEC, (1, 5, 5), seed=0)
    return Trainer(model, CrossEntropyLoss(), SGD(model.named_parameters(), lr=0.1, momentum=0.9),
                   epochs=epochs, batch_size=4, seed=0, progress=False, log=lambda _: None, **kwargs)


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


def test_update_guard_stops_skips_and_clips():
    from cnnx.engine.parameter import Parameter

    param = Parameter(np.zeros(4, np.float32))
    param.grad = np.array([3.0, 4.0, 0.0, 0.0], np.float32)
    assert UpdateGuard(grad_clip_norm=1.0).gradients_ok({"p": param}, 1, 1)
    assert np.allclose(np.linalg.norm(param.grad), 1.0)
    param.grad[0] = np.nan
    with pytest.raises(TrainingDiverged, match="gradient of p became non-finite at epoch 2, batch 7"):
        UpdateGuard().gradients_ok({"p": param}, 2, 7)
    assert not UpdateGuard("skip_batch").gradients_ok({"p": param}, 2, 7)
    with pytest.raises(TrainingDiverged, match="loss became inf at epoch 3, batch 1"):
        UpdateGuard().loss_ok(float("inf"), 3, 1)


def test_outbox_keeps_order_retries_and_spills_what_it_cannot_send(tmp_path):
    sent, store_up = [], [False]

    def call(n):
        def send():
            if not store_up[0]:
                raise ConnectionError("refused")
            sent.append(n)
        return Pending(send, {"kind": "metrics", "run_id": "r", "metrics": [["m", float(n), 0, n]]})

    warnings = []
    outbox = Outbox("http://x", warn=warnings.append, sleep=lambda s: None)
    assert not outbox.submit(call(1)) and not outbox.submit(call(2))
    store_up[0] = True
    assert outbox.submit(call(3)) and sent == [1, 2, 3]
    assert "unreachable" in warnings[0] and "reachable again" in warnings[-1]

    store_up[0] = False
    outbox.submit(call(4))
    assert not outbox.drain(timeout=0.5)
    spilled = outbox.spill(tmp_path)
    assert spilled == tmp_path / SPILL_FILE
    assert [json.loads(line)["metrics"][0][3] for line in spilled.read_text().splitlines()] == [4]


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


def test_sigterm_only_raises_the_flag_and_handlers_are_restored():
    import os
    import signal

    from cnnx.training.signals import InterruptFlag

    before = signal.getsignal(signal.SIGTERM)
    with InterruptFlag() as flag:
        assert not flag.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and flag.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def tiny_data():
    from cnnx.data.splits import DataSplits

    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    y = np.arange(24) % 3
    return DataSplits(train=(x, y), val=(x[:6], y[:6]), test=(x[:6], y[:6]), classes=["a", "b", "c"],
                      input_shape=(1, 5, 5), name="t")


def test_a_signal_while_the_run_finishes_lets_it_finish():
    """SIGTERM during the test evaluation or the end-of-run report used to hit the default
    handler: the process died silently halfway through logging and the MLflow run stayed
    RUNNING. Now it is deferred until the run has finished."""
    import os
    import signal

    from cnnx.training.callbacks import Callback

    class SignalAtEnd(Callback):
        def on_fit_end(self, trainer, test_metrics):
            os.kill(os.getpid(), signal.SIGTERM)

    class LaterCallback(Callback):
        ended = False

        def on_fit_end(self, trainer, test_metrics):
            self.ended = True

    reached_default = []
    previous = signal.signal(signal.SIGTERM, lambda *_: reached_default.append(True))
    later, lines = LaterCallback(), []
    try:
        trainer = make_trainer(epochs=1, callbacks=[SignalAtEnd(), later])
        trainer.log = lines.append
        trainer.fit(tiny_data())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not reached_default and later.ended
    assert lines == ["SIGTERM received while the run was finishing; it finished first (nothing to resume)"]


@pytest.mark.slow  # creating a sqlite MLflow store takes seconds
def test_a_signal_between_epochs_is_tagged_as_the_console_says_it(tmp_path, monkeypatch):
    """A SIGINT at an epoch boundary printed 'after epoch 1', but the run's error tag said
    'stopped after epoch 1, batch 0'."""
    import os
    import signal

    from mlflow import MlflowClient

    from cnnx.cli import interrupted_message
    from cnnx.tracking.mlflow_tracker import MlflowTracker
    from cnnx.training.callbacks import Callback
    from cnnx.training.signals import TrainingInterrupted

    class SignalAfterEpoch1(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.chdir(tmp_path)  # the store's artifacts go to ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(experiment_name="e", config={"seed": 0}, config_yaml="seed: 0\n", tracking_uri=uri,
                            log_kernels=False, log_weights=False, log_plots=False, log_model=False,
                            spill_dir=tmp_path / "unsent")
    trainer = make_trainer(epochs=3, callbacks=[Checkpoint(tmp_path / "ck"), tracker, SignalAfterEpoch1()])
    with pytest.raises(TrainingInterrupted) as caught:
        trainer.fit(tiny_data())
    console = interrupted_message(caught.value, [])
    assert console.startswith("interrupted by SIGINT after epoch 1; checkpoint saved to "), console
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "TrainingInterrupted: SIGINT received; stopped after epoch 1"


@pytest.mark.slow  # creating a sqlite MLflow store takes seconds
def test_spilled_calls_replay_into_the_store(tmp_path):
    from mlflow import MlflowClient

    from cnnx.tracking.outbox import replay

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id

    def refused():
        raise ConnectionError("refused")

    outbox = Outbox(uri, warn=lambda _: None)
    outbox.submit(Pending(refused, {"kind": "metrics", "run_id": run_id,
                                    "metrics": [["val_acc", 0.5, 1, 1], ["val_acc", 0.75, 2, 2]]}))
    outbox.submit(Pending(refused, {"kind": "status", "run_id": run_id, "status": "FINISHED"}))
    outbox.spill(tmp_path / "unsent")
    assert replay(tmp_path / "unsent", uri) == 2
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_acc")] == [(1, 0.5), (2, 0.75)]
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow  # creating a sqlite MLflow store takes seconds
def test_a_replay_that_stops_keeps_exactly_the_calls_it_did_not_send(tmp_path):
    from mlflow import MlflowClient

    from cnnx.tracking.mlflow_tracker import TrackingError
    from cnnx.tracking.outbox import replay

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(uri)
    run_id, unknown_run = client.create_run(client.create_experiment("e")).info.run_id, "0" * 32

    def refused():
        raise ConnectionError("refused")

    outbox = Outbox(uri, warn=lambda _: None)
    outbox.submit(Pending(refused, {"kind": "image", "run_id": run_id, "key": "k", "step": 1},
                          {"image": np.zeros((4, 4, 3), np.uint8)}))
    for run in (unknown_run, run_id):  # the store refuses the first: this replay stops there
        outbox.submit(Pending(refused, {"kind": "status", "run_id": run, "status": "FINISHED"}))
    outbox.spill(tmp_path / "unsent")
    with pytest.raises(TrackingError, match=r"sent 1 of 3 calls, the other 2 stay in .*unsent: run this command"):
        replay(tmp_path / "unsent", uri)
    left = (tmp_path / "unsent" / SPILL_FILE).read_text().splitlines()
    assert [json.loads(line)["run_id"] for line in left] == [unknown_run, run_id]
    assert [p.name for p in (tmp_path / "unsent").iterdir()] == [SPILL_FILE]  # the sent image's array went too


@pytest.mark.slow  # creating a sqlite MLflow store takes seconds
def test_a_replay_killed_before_it_rewrote_the_file_resends_nothing_it_delivered(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from cnnx.tracking.mlflow_tracker import TrackingError
    from cnnx.tracking.outbox import _Delivered, replay

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e")
    run_id, deleted = (client.create_run(experiment).info.run_id for _ in range(2))
    client.delete_run(deleted)  # the store refuses to end it: the first replay stops there

    def refused():
        raise ConnectionError("refused")

    outbox = Outbox(uri, warn=lambda _: None)
    outbox.submit(Pending(refused, {"kind": "image", "run_id": run_id, "key": "k", "step": 1},
                          {"image": np.zeros((4, 4, 3), np.uint8)}))
    for run in (deleted, run_id):
        outbox.submit(Pending(refused, {"kind": "status", "run_id": run, "status": "FINISHED"}))
    outbox.spill(tmp_path / "unsent")
    with monkeypatch.context() as killed:
        killed.setattr(_Delivered, "compact", lambda self, lines, size_read: None)  # as if killed before rewriting
        with pytest.raises(TrackingError, match="sent 1 of 3 calls"):
            replay(tmp_path / "unsent", uri)
    assert len((tmp_path / "unsent" / SPILL_FILE).read_text().splitlines()) == 3  # not rewritten
    images = list_artifacts(client, run_id)
    # The count holds in a copy of the folder too (a backup restored, another disk).
    copied = Path(shutil.copytree(tmp_path / "unsent", tmp_path / "copied"))

    client.restore_run(deleted)
    assert replay(copied, uri) == 2  # the two calls not delivered, not the image again
    assert list_artifacts(client, run_id) == images
    assert [client.get_run(r).info.status for r in (deleted, run_id)] == ["FINISHED", "FINISHED"]
    assert (copied / SPILL_FILE).read_text() == ""
    assert sorted(p.name for p in copied.iterdir()) == [SPILL_FILE]
    assert replay(copied, uri) == 0


@pytest.mark.slow  # creating a sqlite MLflow store takes seconds
@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts written bytes through Linux's /proc")
def test_a_replay_writes_bytes_in_proportion_to_the_calls_not_their_square(tmp_path, monkeypatch):
    """Before: each delivered call rewrote the rest of unsent.jsonl, so replaying 2,000 spilled
    metric batches wrote ~1,000 times the file's size."""
    from mlflow import MlflowClient

    from cnnx.tracking import outbox as outbox_module

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    MlflowClient(uri).search_experiments()  # the store exists before the replay opens it
    outbox = Outbox(uri, warn=lambda _: None)
    for step in range(2000):
        outbox.pending.append(Pending(None, {"kind": "metrics", "run_id": "0" * 32,
                                             "metrics": [["val_acc", 0.5, 1_700_000_000_000, step]]}))
    spilled = outbox.spill(tmp_path / "unsent")
    size = spilled.stat().st_size
    monkeypatch.setattr(outbox_module, "_send", lambda client, directory, record: None)  # only the bookkeeping

    def written() -> int:
        return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["wchar"])

    before = written()
    assert outbox_module.replay(tmp_path / "unsent", uri) == 2000
    assert written() - before < 3 * size, (written() - before, size)


@pytest.mark.slow  # creating a sqlite MLflow store takes seconds
def test_calls_a_run_spills_while_a_replay_runs_are_kept_for_the_next_one(tmp_path, monkeypatch):
    """Before: the replay rewrote the spill file from the lines it had read at its start, so a
    call a resumed run spilled into the same folder meanwhile was dropped, its array left behind."""
    from mlflow import MlflowClient

    from cnnx.tracking import outbox as outbox_module
    from cnnx.tracking.outbox import PROGRESS_FILE

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    MlflowClient(uri).search_experiments()  # the store exists before the replay opens it
    folder = tmp_path / "unsent"

    def spill(*steps):
        outbox = Outbox(uri, warn=lambda _: None)
        for step in steps:
            outbox.pending.append(Pending(None, {"kind": "image", "run_id": "r", "key": "k", "step": step},
                                          {"image": np.full((2, 2, 3), step, np.uint8)}))
        outbox.spill(folder)

    spill(1, 2)
    # A count no replay wrote (json.loads reads 1e999 as inf) is no count: everything is still to send.
    (folder / PROGRESS_FILE).write_text('{"calls": 1e999, "sha256": "x"}')
    sent = []

    def send(client, directory, record):
        np.load(directory / record["arrays"]["image"])  # the call's array is there when it is sent
        sent.append(record["step"])
        if record["step"] == 1:
            spill(3)
        if record["step"] == 3:  # a spill caught between saving its array and writing its line
            np.save(directory / "9-abcdefabcdef-image.npy", np.zeros(1))

    monkeypatch.setattr(outbox_module, "_send", send)
    assert outbox_module.replay(folder, uri) == 2 and sent == [1, 2]
    assert [json.loads(line)["step"] for line in (folder / SPILL_FILE).read_text().splitlines()] == [3]

    # A spill while the replay rewrites the file waits for it (before: appended to the file
    # being replaced, and lost). The spill starts in another thread just before the replace.
    real_replace, spills = os.replace, []

    def replace_while_a_run_spills(source, target):
        if str(target).endswith(SPILL_FILE) and not spills:
            spills.append(threading.Thread(target=spill, args=(4,)))
            spills[0].start()
            time.sleep(0.3)  # long enough for an unlocked spill to append to the file being replaced
        real_replace(source, target)

    monkeypatch.setattr(outbox_module.os, "replace", replace_while_a_run_spills)
    # The arrays a replay killed after its rewrite had listed to delete go too; a file of the
    # user's own stays, and so does a spill's array whose line is not written yet.
    np.save(folder / "1-0123456789ab-image.npy", np.zeros(1))
    (folder / outbox_module.DELIVERED_ARRAYS).write_text('["1-0123456789ab-image.npy"]')
    np.save(folder / "my_features.npy", np.zeros(1))
    assert outbox_module.replay(folder, uri) == 1 and sent == [1, 2, 3]
    spills[0].join()
    assert [json.loads(line)["step"] for line in (folder / SPILL_FILE).read_text().splitlines()] == [4]
    assert outbox_module.replay(folder, uri) == 1 and sent == [1, 2, 3, 4]
    assert sorted(p.name for p in folder.iterdir()) == ["9-abcdefabcdef-image.npy", "my_features.npy", SPILL_FILE]


def test_a_last_line_without_its_newline_is_sent_if_whole_and_kept_if_not(tmp_path):
    """Where the lock does nothing, a spill may be writing the last line while a replay reads:
    a whole record whose newline was cut is a call to send, anything else waits."""
    from cnnx.tracking.outbox import _spilled_lines

    whole, cut = '{"kind": "tag", "run_id": "r"}', '{"kind": "tag", "ru'
    (tmp_path / SPILL_FILE).write_text(f"{whole}\n{whole}")
    assert _spilled_lines(tmp_path) == ([whole, whole], 2 * len(whole) + 1)
    (tmp_path / SPILL_FILE).write_text(f"{whole}\n{cut}")
    assert _spilled_lines(tmp_path) == ([whole], len(whole) + 1)
    # A spill after a line cut short starts on a line of its own, not glued to it.
    outbox = Outbox("http://x", warn=lambda _: None)
    outbox.pending.append(Pending(None, json.loads(whole)))
    outbox.spill(tmp_path)
    assert (tmp_path / SPILL_FILE).read_text().splitlines() == [whole, cut, whole]


def test_a_folder_that_cannot_be_locked_still_takes_the_spill(tmp_path, monkeypatch):
    """Before: flock's ENOLCK (a filesystem without locks) made the spill raise, and every
    queued call was lost."""
    import fcntl

    def no_locks(*_):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    outbox = Outbox("http://x", warn=lambda _: None)
    outbox.pending.append(Pending(None, {"kind": "tag", "run_id": "r", "key": "k", "value": "v"}))
    spilled = outbox.spill(tmp_path / "unsent")
    assert [json.loads(line)["key"] for line in spilled.read_text().splitlines()] == ["k"]


def test_skip_batch_reports_once_per_epoch_and_fails_when_a_whole_epoch_is_skipped():
    import warnings

    from cnnx.data.splits import DataSplits
    from cnnx.engine.losses.cross_entropy import CrossEntropyLoss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    y = np.arange(24) % 3
    data = DataSplits(train=(x, y), val=(x[:6], y[:6]), test=(x[:6], y[:6]), classes=["a", "b", "c"],
                      input_shape=(1, 5, 5), name="t")
    model = build_model(SPEC, (1, 5, 5), seed=0)
    messages = []
    # The first update sends the weights to ~1e30: every later batch overflows.
    trainer = Trainer(model, CrossEntropyLoss(), SGD(model.named_parameters(), lr=1e30), epochs=3, batch_size=4,
                      seed=0, progress=False, log=messages.append, update_guard=UpdateGuard("skip_batch"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the guard reports divergence; NumPy must not warn as well
        with pytest.raises(TrainingDiverged, match="every batch of epoch 2 was skipped"):
            trainer.fit(data)
    assert messages == ["skipped epoch 1, batch 2: non-finite loss or gradient", "skipped 5 of 6 batches in epoch 1",
                        "skipped epoch 2, batch 1: non-finite loss or gradient"]
    assert trainer.history.epochs[0]["skipped_batches"] == 5


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


def test_a_second_ctrl_c_still_points_at_the_newest_checkpoint(tmp_path):
    """A second Ctrl-C stops mid-batch; the CLI said only 'no checkpoint written for this
    moment', although the previous epoch's checkpoint resumes the run."""
    from cnnx.cli import stopped_at_once_message
    from cnnx.training.callbacks import Callback

    class SecondCtrlC(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 2:
                raise KeyboardInterrupt

    trainer = make_trainer(epochs=3, callbacks=[Checkpoint(tmp_path), SecondCtrlC()])
    with pytest.raises(KeyboardInterrupt) as caught:
        trainer.fit(tiny_data())
    caught.value.run_dir = "runs/x"
    message = stopped_at_once_message(caught.value, ["+experiment=lenet"])
    assert message == (f"interrupted; no checkpoint written for this moment, but the newest one, "
                       f"{tmp_path / 'epoch-0002.npz'}, resumes with: python -m cnnx +experiment=lenet "
                       f"trainer.resume=true hydra.run.dir=runs/x")
    assert stopped_at_once_message(KeyboardInterrupt(), []) == "interrupted; no checkpoint written for this moment"


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
