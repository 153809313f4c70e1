"""The tracking outbox, in-process: it keeps order, retries, spills what it cannot send, and a
replay sends the spill into a store exactly once."""

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

from cnnx.tracking.outbox import SPILL_FILE, Outbox, Pending


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


def test_a_replay_into_a_store_without_the_run_says_so_instead_of_to_try_again(tmp_path, capsys):
    """It said "run this command again once the store works": the store works, the run is
    not in it (another project's store, or a run deleted since), and no retry can help."""
    from mlflow import MlflowClient

    from cnnx.tracking.outbox import main

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    MlflowClient(uri).create_experiment("e")
    outbox = Outbox(uri, warn=lambda _: None)
    def refused():
        raise ConnectionError("refused")

    outbox.submit(Pending(refused, {"kind": "status", "run_id": "f" * 32, "status": "FINISHED"}))
    outbox.spill(tmp_path / "unsent")
    assert main([str(tmp_path / "unsent"), "--tracking-uri", uri]) == 2
    # (the last line: MLflow logs its creating the store's tables above it)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"cnnx: error: run {'f' * 32} is not in store {uri} (--tracking-uri): the calls in {tmp_path / 'unsent'} "
        f"belong to another store (pass its --tracking-uri) or the run was deleted; sent 0 of 1 calls, "
        f"the other 1 stay in {tmp_path / 'unsent'}")
    assert (tmp_path / "unsent" / SPILL_FILE).exists()


@pytest.mark.slow  # creating a sqlite MLflow store takes seconds
def test_a_replay_that_stops_keeps_exactly_the_calls_it_did_not_send(tmp_path):
    from mlflow import MlflowClient

    from cnnx.errors import ConfigError
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
    with pytest.raises(ConfigError, match=rf"^run {unknown_run} is not in store .* the run was deleted; sent 1 of 3 "
                                          r"calls, the other 2 stay in .*unsent$"):
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
