"""The MLflow server goes away in the middle of a run and comes back only after training:
training goes on, and every metric, image and artifact (plots and model included) reaches the
store in the end. When it comes back only after the run has spilled what it could not send,
the replay command the run prints delivers that once, however often it is run.

The outage is a TCP forwarder between the run and a real MLflow server (its Flask app and
REST handlers over a sqlite store): `tracking.uri` points at the forwarder, which refuses
connections from the second epoch to past the end of training and then accepts them again on the same port. To the run that is
exactly a server that stops and restarts; the test pays for one server start-up instead of
two (each takes from several to tens of seconds on a busy 2-core machine).
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from e2e_helpers import list_artifacts, logged_model, start_cli, wait_for_file

pytestmark = pytest.mark.slow

EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Forwarder:
    """127.0.0.1:port → 127.0.0.1:target; ``down()`` refuses connections, ``up()`` restores."""

    def __init__(self, target: int):
        self.target, self.port = target, free_port()
        self._connections: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        self._listener.close()
        for connection in self._connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            server = socket.create_connection(("127.0.0.1", self.target))
            self._connections += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("mlflow_test_server.py")),
         str(tmp_path / "server.db"), str(tmp_path / "server-artifacts"), str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "server.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", port
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def start_run(tmp_path: Path, forwarder: Forwarder, *overrides: str) -> tuple[subprocess.Popen, Path]:
    """A small run tracked through ``forwarder``, in ``tmp_path/work``; (process, that folder)."""
    data = tmp_path / "images.npz"
    make_data(data)
    workdir = tmp_path / "work"
    workdir.mkdir()
    process = start_cli([
        "+experiment=digits_small", "dataset=npz", f"dataset.path={data}", "trainer.batch_size=8",
        "hydra.run.dir=run", f"tracking.uri=http://127.0.0.1:{forwarder.port}", *overrides,
    ], workdir, env={"CNNX_TEST_BATCH_DELAY": "0.03"})
    return process, workdir


def test_server_outage_mid_run_loses_no_metric(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    server_uri, server_port = mlflow_server
    forwarder = Forwarder(server_port)
    process, workdir = start_run(tmp_path, forwarder, "trainer.epochs=4")
    checkpoints = workdir / "run" / "checkpoints"
    wait_for_file(checkpoints / "epoch-0001.npz", process)
    forwarder.down()
    # Down until training is over: epochs 2 to 4 and the test metrics are queued, and the run's
    # report (plots, model), which is too large to queue, has to wait for the store.
    wait_for_file(checkpoints / "epoch-0004.npz", process)
    time.sleep(3)
    forwarder.up()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "unreachable" in stderr and "reachable again" in stderr, stderr

    client = MlflowClient(server_uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    for key in EPOCH_METRICS:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == [1, 2, 3, 4], (key, steps)
    assert {"test_loss", "test_acc"} <= run.data.metrics.keys()
    artifacts = list_artifacts(client, run.info.run_id)
    assert "weights.npz" in artifacts
    assert {"plots/learning_curves.png", "plots/confusion_matrix.png"} <= set(artifacts), artifacts
    assert logged_model(client, run.info.run_id).status.name == "READY"
    assert "not logged" not in stderr
    # The first conv layer's kernels at every step 0..4 (the run report adds other images at
    # the end). Delivery is at least once: an upload whose reply the outage cut off is sent
    # again, so a step may hold two identical images, but none is missing.
    kernel_steps = {int(a.split("+step+")[1].split("+")[0]) for a in artifacts
                    if a.startswith("images/kernels~conv1+") and a.endswith(".png")}
    assert kernel_steps == {0, 1, 2, 3, 4}, artifacts
    assert not (workdir / "run" / "mlflow-unsent").exists()


def replay(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, *command], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=300)


def folder_state(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_a_spilled_run_is_replayed_once_and_only_once_the_server_is_back(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    server_uri, server_port = mlflow_server
    forwarder = Forwarder(server_port)
    process, workdir = start_run(tmp_path, forwarder, "trainer.epochs=3", "tracking.flush_timeout=1",
                                 "tracking.log_plots=false", "tracking.log_model=false")
    wait_for_file(workdir / "run" / "checkpoints" / "epoch-0001.npz", process)
    forwarder.down()  # for good: epochs 2 and 3, the weights and the end of the run are spilled
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    printed = stderr.split("send them later with: ", 1)[1].splitlines()[0]
    command = shlex.split(printed)
    assert command[:3] == ["python", "-m", "cnnx.tracking.outbox"], printed
    unsent = workdir / "run" / "mlflow-unsent"
    spilled = folder_state(unsent)

    # Still down: one line naming the store, and the outbox as it was, for a later replay.
    result = replay(command[1:], workdir)
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"cnnx: error: cannot reach MLflow tracking server 'http://127.0.0.1:{forwarder.port}'")
    assert "run this command again" in lines[0], lines[0]
    assert folder_state(unsent) == spilled

    forwarder.up()
    result = replay(command[1:], workdir)
    assert result.returncode == 0, result.stderr
    # (MLflow itself prints links to the run above, as it ends it on a tracking server)
    assert result.stdout.strip().splitlines()[-1].startswith("sent "), result.stdout
    client = MlflowClient(server_uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    for key in EPOCH_METRICS:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2, 3], key
    artifacts = list_artifacts(client, run.info.run_id)
    kernel_images = sorted(a for a in artifacts if a.startswith("images/kernels~conv1+"))
    kernel_steps = {int(a.split("+step+")[1].split("+")[0]) for a in kernel_images if a.endswith(".png")}
    assert kernel_steps == {0, 1, 2, 3} and "weights.npz" in artifacts, artifacts

    # Sent calls left the outbox: a second replay says so and sends nothing again.
    result = replay(command[1:], workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"nothing left to send in {command[3]}: every call it held has been delivered"
    assert sorted(a for a in list_artifacts(client, run.info.run_id) if a.startswith("images/")) == kernel_images


@pytest.mark.parametrize("folder", ["does-not-exist", "."])
def test_replaying_a_folder_that_holds_no_outbox_says_so_in_one_line(tmp_path, folder):
    result = replay(["-m", "cnnx.tracking.outbox", folder, "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    problem = "does not exist" if folder == "does-not-exist" else "holds no unsent.jsonl"
    assert line.startswith(f"cnnx: error: {folder} {problem}; expected the folder a run named"), line
    assert not (tmp_path / "m.db").exists()


def test_a_replay_without_its_folder_names_the_command_the_run_printed(tmp_path):
    """The usage line said "outbox.py", a file the user never typed."""
    result = replay(["-m", "cnnx.tracking.outbox", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "python -m cnnx.tracking.outbox: error: the following arguments are required: directory")


def make_data(path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    splits = {}
    for name, n in (("train", 160), ("val", 40), ("test", 40)):
        splits[f"x_{name}"] = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
        splits[f"y_{name}"] = np.arange(n) % 10
    np.savez(path, **splits)
