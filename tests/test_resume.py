"""Runs that are killed, interrupted or find their newest checkpoint corrupt, through the real
CLI: resuming gives the final weights and the MLflow metric history of a run that was never
interrupted, bit for bit.

``epoch_seconds`` is excluded from every comparison: it is wall-clock time, which no two runs
share. Everything else logged per epoch (losses, accuracies, lr) and at the end (test
metrics) must be equal exactly, in the same steps, with no step logged twice.

The runs use dropout, random shifts and early stopping (with a patience that never fires) so
that every generator and callback state takes part, and the ``CNNX_TEST_BATCH_DELAY`` hook
slows batches down so that a signal lands in the middle of an epoch.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from e2e_helpers import all_runs, metric_history, run_cli, start_cli, store_client, wait_for_file

from cnnx.training.checkpoint import NAME
from cnnx.training.checkpoint_file import read_checkpoint, write_checkpoint

pytestmark = pytest.mark.slow

WALL_CLOCK_METRICS = {"epoch_seconds"}
# 50 batches x 0.1 s: an epoch lasts 5 s, longer than the tracking process takes to create
# its run on a lightly loaded machine, so the signal can land inside epoch 2 of a run that
# exists (inside epoch 3 where the run came later).
DELAY = {"CNNX_TEST_BATCH_DELAY": "0.1"}
EPOCHS = 3


def run_args(data: Path) -> list[str]:
    return [
        "+experiment=digits_small", "dataset=npz", f"dataset.path={data}", f"trainer.epochs={EPOCHS}",
        "trainer.batch_size=8", "+model.layers.drop={type:dropout,p:0.2}", "trainer.augment.max_shift=1",
        "trainer.early_stopping.enabled=true", "trainer.early_stopping.patience=10", "hydra.run.dir=run",
        # What resuming must keep is metrics, weights and checkpoints; the end-of-run report
        # (plots, model) is checked elsewhere and would add seconds to every run here.
        "tracking.log_plots=false", "tracking.log_model=false",
    ]


def logged(workdir: Path) -> tuple[object, dict[str, list[tuple[int, float]]], dict[str, np.ndarray]]:
    """(the only run, its full metric histories but wall-clock ones, its logged final weights)."""
    (run,) = all_runs(workdir)
    client = store_client(workdir)
    histories = {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics if key not in WALL_CLOCK_METRICS
    }
    with np.load(client.download_artifacts(run.info.run_id, "weights.npz", str(workdir))) as archive:
        weights = {k: archive[k] for k in archive.files}
    return run, histories, weights


def assert_same_as_reference(workdir: Path, reference) -> None:
    run, histories, weights = logged(workdir)
    _, ref_histories, ref_weights = reference
    assert run.info.status == "FINISHED"
    assert histories == ref_histories
    assert weights.keys() == ref_weights.keys()
    for key in weights:
        assert np.array_equal(weights[key], ref_weights[key]), key


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "images.npz"
    rng = np.random.default_rng(1)
    splits = {}
    for name, n in (("train", 400), ("val", 40), ("test", 40)):
        y = np.arange(n) % 10
        # a learnable signal: one bright pixel per class
        x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32) * 0.5
        x[np.arange(n), 0, y // 4 * 2, y % 4 * 2] += 3.0
        splits[f"x_{name}"], splits[f"y_{name}"] = x, y
    np.savez(path, **splits)
    return path


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory, data) -> Path:
    workdir = tmp_path_factory.mktemp("reference")
    result = run_cli(run_args(data), workdir)
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.fixture(scope="module")
def reference(reference_dir):
    run, histories, weights = logged(reference_dir)
    assert run.info.status == "FINISHED"
    assert [step for step, _ in histories["val_acc"]] == [1, 2, 3]
    return run, histories, weights


def signal_mid_epoch(workdir: Path, data: Path, signum: int, group: bool = False,
                     extra: tuple[str, ...] = ()) -> tuple[Path, int, str, int]:
    """Start a slowed run (``run_args`` and ``extra``) and, once its MLflow run exists, send
    ``signum`` in the middle of the epoch under way (2; 3 on a machine so loaded that the run
    was created late), to the run's whole process group with ``group``, as ``timeout`` or a
    terminal's Ctrl-C does;
    (checkpoint dir, exit code, stderr, the epoch the signal landed in)."""
    checkpoints = workdir / "run" / "checkpoints"
    store_client(workdir)  # an existing store, as for most runs: building one takes seconds
    process = start_cli([*run_args(data), *extra], workdir, env=DELAY, start_new_session=group)
    wait_for_file(checkpoints / "epoch-0001.npz", process)
    # The MLflow run is created by the tracking process, beside training.
    deadline = time.monotonic() + 120
    while not all_runs(workdir):
        assert process.poll() is None and time.monotonic() < deadline, "the MLflow run was never created"
        time.sleep(0.05)
    assert not (checkpoints / f"epoch-{EPOCHS:04d}.npz").exists(), "every epoch ended before the run was created"
    time.sleep(0.3)
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    # The epoch after the newest completed one (a stop mid-epoch writes a -batch- checkpoint).
    names = [NAME.match(path.name) for path in checkpoints.iterdir()]
    ended = max(int(name[1]) for name in names if name and name[2] is None)
    assert ended < EPOCHS, "the signal came after the last epoch"
    return checkpoints, process.returncode, stderr, ended + 1


def checkpoint_files(checkpoints: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in checkpoints.iterdir()}


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, data, reference):
    checkpoints, returncode, _, epoch = signal_mid_epoch(tmp_path, data, signal.SIGKILL)
    assert returncode == -signal.SIGKILL
    (killed,) = all_runs(tmp_path)
    assert killed.info.status == "RUNNING"  # nobody could tell MLflow

    result = run_cli([*run_args(data), "trainer.resume=true"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stdout and f"epoch-{epoch - 1:04d}.npz" in result.stdout
    assert_same_as_reference(tmp_path, reference)
    (run,) = all_runs(tmp_path)
    assert run.info.run_id == killed.info.run_id


def test_sigint_saves_a_checkpoint_marks_the_run_killed_and_resumes(tmp_path, data, reference):
    checkpoints, returncode, stderr, epoch = signal_mid_epoch(tmp_path, data, signal.SIGINT)
    assert returncode == 128 + signal.SIGINT, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"cnnx: interrupted by SIGINT during epoch {epoch}, batch "), last
    assert "checkpoint saved to" in last and "resume with: " in last
    assert (tmp_path / "run" / "app.log").read_text().rstrip().endswith(last)  # kept with the run
    saved = sorted(p.name for p in checkpoints.glob(f"epoch-{epoch:04d}-batch-*.npz"))
    assert len(saved) == 1, list(checkpoints.iterdir())
    (run,) = all_runs(tmp_path)
    assert run.info.status == "KILLED"
    assert "TrainingInterrupted" in run.data.tags["error"]

    command = shlex.split(last.split("resume with: ", 1)[1])
    assert command[:3] == ["python", "-m", "cnnx"] and "trainer.resume=true" in command
    # Without the resume flag, a new run would have pruned this one's checkpoints.
    before = checkpoint_files(checkpoints)
    again = run_cli([arg for arg in command[3:] if arg != "trainer.resume=true"], tmp_path)
    assert again.returncode == 2 and again.stderr.startswith("cnnx: error: hydra.run.dir: "), again.stderr
    assert checkpoint_files(checkpoints) == before
    assert [(r.info.run_id, r.info.status) for r in all_runs(tmp_path)] == [(run.info.run_id, "KILLED")]
    result = run_cli(command[3:], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resumed from {checkpoints / saved[0]}" in result.stdout
    assert_same_as_reference(tmp_path, reference)


@pytest.mark.parametrize(("written_by", "resumed_by"), [("true", "false"), ("false", "true")])
def test_a_run_resumed_with_the_other_tracker_continues_its_mlflow_run(tmp_path, data, reference, written_by,
                                                                      resumed_by):
    """The checkpoint kept the tracker's state under the tracker's class name, so a run
    checkpointed with tracking.background=true and resumed with false (or the other way)
    found no MLflow run to continue: it logged a second run, from the resumed epoch on."""
    checkpoints, returncode, stderr, _ = signal_mid_epoch(
        tmp_path, data, signal.SIGINT, extra=(f"tracking.background={written_by}",))
    assert returncode == 128 + signal.SIGINT, stderr
    (stopped,) = all_runs(tmp_path)
    assert stopped.info.status == "KILLED"

    result = run_cli([*run_args(data), "trainer.resume=true", f"tracking.background={resumed_by}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert_same_as_reference(tmp_path, reference)
    (run,) = all_runs(tmp_path)
    assert run.info.run_id == stopped.info.run_id


def as_written_before(path: Path, tracker_class: str) -> None:
    """Rewrite checkpoint ``path`` as cnnx wrote it before the tracker's state had a key of its
    own: under the class name of the tracker that wrote it."""
    arrays, header = read_checkpoint(path)
    header["callbacks"][tracker_class] = header["callbacks"].pop("mlflow_run")
    for key in [key for key in arrays if key.startswith("callback/mlflow_run/")]:
        arrays[key.replace("mlflow_run", tracker_class, 1)] = arrays.pop(key)
    header.pop("format"), header.pop("version")
    write_checkpoint(path, arrays, header)


@pytest.mark.parametrize(("tracker_class", "resumed_by"), [("BackgroundTracker", "false"), ("MlflowTracker", "true")])
def test_a_checkpoint_keyed_by_tracker_class_still_continues_its_run(tmp_path, data, reference_dir, reference,
                                                                     tracker_class, resumed_by):
    workdir = tmp_path / "copy"
    shutil.copytree(reference_dir, workdir)
    checkpoints = workdir / "run" / "checkpoints"
    (checkpoints / f"epoch-{EPOCHS:04d}.npz").unlink()
    as_written_before(checkpoints / f"epoch-{EPOCHS - 1:04d}.npz", tracker_class)
    (finished,) = all_runs(workdir)

    result = run_cli([*run_args(data), "trainer.resume=true", f"tracking.background={resumed_by}"], workdir)
    assert result.returncode == 0, result.stderr
    assert_same_as_reference(workdir, reference)
    (run,) = all_runs(workdir)
    assert run.info.run_id == finished.info.run_id


@pytest.mark.parametrize("background", ["true", "false"])
def test_resuming_from_another_directory_does_not_split_the_run_across_stores(tmp_path, data, background):
    """The default store is ./mlflow.db: resumed by its checkpoint's path from another working
    directory, a run found no MLflow run of its own in that directory's store and silently
    logged a new one there (with an early checkpoint, which holds only the run's key), or
    failed with spill warnings, a new empty store and unsent calls left behind."""
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir(), elsewhere.mkdir()
    args = [*[arg for arg in run_args(data) if not arg.startswith(("trainer.epochs=", "hydra.run.dir="))],
            f"tracking.background={background}"]
    result = run_cli([*args, "trainer.epochs=2", "hydra.run.dir=run"], first)
    assert result.returncode == 0, result.stderr
    (original,) = all_runs(first)
    record = run_record(first, original.info.run_id)
    checkpoint = first / "run" / "checkpoints" / "epoch-0002.npz"
    before = checkpoint_files(checkpoint.parent)
    resume = [*args, "trainer.epochs=3", f"trainer.resume={checkpoint}", "hydra.run.dir=run"]
    store, here = f"sqlite:///{first / 'mlflow.db'}", f"sqlite:///{elsewhere / 'mlflow.db'}"

    refused = run_cli(resume, elsewhere)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("cnnx: error: trainer.resume: the checkpoint logged to MLflow run"), line
    assert (f"in store {store}, not in {here} (the default store, ./mlflow.db in the working directory), "
            f"which does not hold it; continue it with tracking.uri={store}, or start a new run in this "
            f"store with tracking.uri={here}") in line, line
    assert not list(elsewhere.glob("mlflow.db*")) and not list(elsewhere.rglob("epoch-*.npz"))
    assert not (elsewhere / "run" / "mlflow-unsent").exists()
    assert run_record(first, original.info.run_id) == record
    assert checkpoint_files(checkpoint.parent) == before

    # Told where it logged, it continues there.
    result = run_cli([*resume, f"tracking.uri={store}"], elsewhere)
    assert result.returncode == 0, result.stderr
    assert "cnnx: warning" not in result.stderr
    (run,) = all_runs(first)
    assert run.info.run_id == original.info.run_id and run.info.status == "FINISHED"
    assert [step for step, _ in metric_history(store_client(first), run.info.run_id, "val_acc")] == [1, 2, 3]
    assert not list(elsewhere.glob("mlflow.db*"))

    # Told to log to this directory's store, it starts a new run there, and says so.
    result = run_cli([*resume, "hydra.run.dir=run2", "tracking.uri=sqlite:///mlflow.db"], elsewhere)
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("cnnx: warning: ")]
    assert warning.startswith(f"cnnx: warning: trainer.resume: the checkpoint logged to MLflow run"), warning
    assert f"in store {store}, not in {here} (tracking.uri)" in warning, warning
    assert "logging to a new run there, tagged cnnx.resumed_from.store" in warning, warning
    (new,) = all_runs(elsewhere)
    assert new.info.status == "FINISHED" and new.data.tags["cnnx.resumed_from.store"] == store
    _, header = read_checkpoint(checkpoint)
    if header["callbacks"]["mlflow_run"]["run_id"]:  # else written before the run id was known
        assert new.data.tags["cnnx.resumed_from"] == original.info.run_id
    # its history holds the checkpoint's epochs, then its own
    assert [step for step, _ in metric_history(store_client(elsewhere), new.info.run_id, "val_acc")] == [1, 2, 3]
    assert len(all_runs(first)) == 1


def test_resuming_with_fewer_epochs_than_the_checkpoint_began_is_refused(tmp_path, data, reference):
    """trainer.epochs below the epoch a run was stopped in used to skip the rest: the test
    metrics of a half-trained model were logged, the run marked FINISHED, exit 0. More epochs
    continue the run, which then says so in its config.yaml and name."""
    checkpoints, returncode, stderr, epoch = signal_mid_epoch(tmp_path, data, signal.SIGINT)
    assert returncode == 128 + signal.SIGINT, stderr
    before = checkpoint_files(checkpoints)
    (saved,) = [name for name in before if "-batch-" in name]

    result = run_cli([*run_args(data), f"trainer.epochs={epoch - 1}", "trainer.resume=true"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"cnnx: error: trainer.epochs={epoch - 1} is too few to resume checkpoint "), line
    assert f"{saved}' (epoch {epoch} of {EPOCHS}, after batch " in line, line
    assert line.endswith(f"accepted: trainer.epochs >= {epoch} ({EPOCHS} trains it as it was started)"), line
    (run,) = all_runs(tmp_path)
    assert run.info.status == "KILLED" and "test_acc" not in run.data.metrics
    assert checkpoint_files(checkpoints) == before

    result = run_cli([*run_args(data), "trainer.resume=true"], tmp_path)  # nothing was lost
    assert result.returncode == 0, result.stderr
    assert_same_as_reference(tmp_path, reference)
    ((run_id, first_name),) = [(r.info.run_id, r.info.run_name) for r in all_runs(tmp_path)]
    # Trained longer, the run's config.yaml and name said the old length: now the config in
    # effect and the command's overrides, the config it was started with kept beside it.
    longer = [f"trainer.epochs={EPOCHS + 1}" if a.startswith("trainer.epochs=") else a for a in run_args(data)]
    result = run_cli([*longer, "trainer.resume=true"], tmp_path)
    assert result.returncode == 0, result.stderr
    # The cosine ended its plan at lr 0; planned for one epoch more, it starts again above 0.
    (said,) = [line for line in result.stdout.splitlines() if line.startswith("the learning-rate schedule")]
    assert said.startswith(f"the learning-rate schedule is planned again for trainer.epochs={EPOCHS + 1} "
                           f"(the checkpoint's run planned {EPOCHS}): the next step's lr is "), said
    assert said.endswith(f", 0 in the plan for {EPOCHS}"), said
    # MLflow's bar for fetching config.yaml, to keep it as config.initial.yaml, was printed.
    assert "Downloading artifacts" not in result.stderr, result.stderr
    (run,) = all_runs(tmp_path)
    client = store_client(tmp_path)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert [step for step, _ in metric_history(client, run.info.run_id, "val_acc")] == list(range(1, EPOCHS + 2))
    assert run.data.params["trainer.epochs"] == str(EPOCHS)  # MLflow never changes a param
    assert run.data.tags["cnnx.resumed_with.trainer.epochs"] == str(EPOCHS + 1)
    assert first_name.replace(f"epochs={EPOCHS},", f"epochs={EPOCHS + 1},") == run.info.run_name
    assert f"epochs={EPOCHS + 1}," in run.info.run_name

    def epochs_in(artifact: str) -> int:
        local = client.download_artifacts(run.info.run_id, artifact, str(tmp_path / "check"))
        return yaml.safe_load(Path(local).read_text())["trainer"]["epochs"]

    assert (epochs_in("config.yaml"), epochs_in("config.initial.yaml")) == (EPOCHS + 1, EPOCHS)

    # A name the user gave in the UI since is theirs: resuming again keeps it.
    client.update_run(run.info.run_id, name="baseline, longer")
    longest = [f"trainer.epochs={EPOCHS + 2}" if a.startswith("trainer.epochs=") else a for a in run_args(data)]
    result = run_cli([*longest, "trainer.resume=true"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert client.get_run(run.info.run_id).info.run_name == "baseline, longer"


def test_a_finished_run_resumes_with_its_epochs_but_not_with_fewer(tmp_path, reference_dir, data, reference):
    workdir = tmp_path / "copy"
    shutil.copytree(reference_dir, workdir)
    result = run_cli([*run_args(data), f"trainer.epochs={EPOCHS - 1}", "trainer.resume=true"], workdir)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"cnnx: error: trainer.epochs={EPOCHS - 1} is too few to resume checkpoint "), line
    assert line.endswith(f"(after epoch {EPOCHS} of {EPOCHS}): a resumed run keeps the epochs it has trained; "
                         f"accepted: trainer.epochs >= {EPOCHS}"), line

    result = run_cli([*run_args(data), "trainer.resume=true"], workdir)
    assert result.returncode == 0, result.stderr
    assert "nothing left to train" in result.stdout
    assert_same_as_reference(workdir, reference)


def test_a_new_run_in_a_directory_holding_checkpoints_is_refused(tmp_path, data, reference_dir):
    """A new run in the directory of an earlier one (no trainer.resume) pruned the earlier
    run's checkpoints by its own retention, with exit 0: a finished run's as much as an
    interrupted one's (test_sigint_saves_a_checkpoint_marks_the_run_killed_and_resumes)."""
    workdir = tmp_path / "copy"
    shutil.copytree(reference_dir, workdir)
    checkpoints = workdir / "run" / "checkpoints"
    before = checkpoint_files(checkpoints)
    (finished,) = all_runs(workdir)
    for changed in ([], ["optimizer.lr=0.2"]):
        result = run_cli([*run_args(data), *changed], workdir)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line == (f"cnnx: error: hydra.run.dir: '{workdir / 'run'}' already holds checkpoints of an earlier "
                        f"run (newest: checkpoints/epoch-{EPOCHS:04d}.npz), which a new run there would prune and "
                        f"mix with its own; resume that run with trainer.resume=true, or choose another hydra.run.dir")
        assert "Total params" not in result.stdout  # refused before the data and the model
        assert checkpoint_files(checkpoints) == before
        (run,) = all_runs(workdir)
        assert (run.info.run_id, run.info.status, run.info.end_time) == (
            finished.info.run_id, "FINISHED", finished.info.end_time)

    elsewhere = run_cli([*run_args(data), "hydra.run.dir=run2", "trainer.epochs=1"], workdir)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert checkpoint_files(checkpoints) == before


# SIGHUP: what a closed terminal sends; it killed the run, which stayed RUNNING.
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_sigterm_to_the_process_group_marks_the_run_killed_with_every_epoch_logged(tmp_path, data, signum):
    # The tracking process gets the signal too; it used to exit on it, and the run stayed
    # RUNNING with the epochs it had not sent yet missing.
    name = signal.Signals(signum).name
    _, returncode, stderr, epoch = signal_mid_epoch(tmp_path, data, signum, group=True)
    assert returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"cnnx: interrupted by {name} during epoch {epoch}, batch "), last
    (run,) = all_runs(tmp_path)
    assert run.info.status == "KILLED"
    assert f"TrainingInterrupted: {name}" in run.data.tags["error"]
    history = store_client(tmp_path).get_metric_history(run.info.run_id, "val_acc")
    assert sorted(m.step for m in history) == list(range(1, epoch))


def test_sighup_from_a_closed_terminal_stops_the_run_with_129_and_keeps_the_line_in_app_log(tmp_path, data):
    """Closing an ssh session hangs the terminal up before the shell sends SIGHUP: writing the
    closing line there failed (EIO), so the run exited 1, and the line never reached app.log."""
    import pty
    import select
    import threading

    terminal, end = pty.openpty()
    store_client(tmp_path)
    process = start_cli(run_args(data), tmp_path, env=DELAY, start_new_session=True, terminal=end)
    os.close(end)
    reading = threading.Event()
    reading.set()

    def read_the_screen():  # a full terminal would block the run's progress bar
        while reading.is_set():
            if select.select([terminal], [], [], 0.05)[0]:
                os.read(terminal, 65536)

    reader = threading.Thread(target=read_the_screen, daemon=True)
    reader.start()
    try:
        wait_for_file(tmp_path / "run" / "checkpoints" / "epoch-0001.npz", process)
    finally:
        time.sleep(0.5)  # into epoch 2: the callbacks after epoch 1's checkpoint may still be running
        reading.clear()
        reader.join()
        os.close(terminal)  # the ssh session is gone ...
    os.killpg(process.pid, signal.SIGHUP)  # ... and its shell hangs its jobs up
    assert process.wait(timeout=60) == 128 + signal.SIGHUP
    (run,) = all_runs(tmp_path)
    assert run.info.status == "KILLED"
    last = (tmp_path / "run" / "app.log").read_text().strip().splitlines()[-1]
    assert "cnnx: interrupted by SIGHUP during epoch " in last and "resume with: " in last, last


def run_record(workdir: Path, run_id: str) -> tuple:
    """Everything MLflow holds of a run but its artifacts: info, params, tags, every metric step."""
    client = store_client(workdir)
    run = client.get_run(run_id)
    histories = {key: metric_history(client, run_id, key) for key in run.data.metrics}
    return run.info.status, run.info.end_time, run.data.params, run.data.tags, histories


def test_resuming_an_older_checkpoint_file_branches_into_a_new_run(tmp_path, data, reference_dir):
    """Resumed from a checkpoint its run had gone past (README: trainer.resume=<file>) with more
    epochs, a run went on logging into that run, which never logs a (key, step) twice: MLflow
    kept the old trajectory's later epochs (lr, val_acc…) beside the new weights and held
    test_acc at both ends. It is a new run now, tagged with the one it came from."""
    workdir = tmp_path / "copy"
    shutil.copytree(reference_dir, workdir)
    checkpoints = workdir / "run" / "checkpoints"
    before = checkpoint_files(checkpoints)
    (old,) = all_runs(workdir)
    old_record = run_record(workdir, old.info.run_id)
    older = checkpoints / "epoch-0002.npz"
    assert older.name in before and f"epoch-{EPOCHS:04d}.npz" in before

    # In a directory of its own, as Hydra's default run dir is.
    result = run_cli([*run_args(data), "trainer.epochs=5", f"trainer.resume={older}", "hydra.run.dir=branch"], workdir)
    assert result.returncode == 0, result.stderr
    assert f"resumed from {older}" in result.stdout
    assert checkpoint_files(checkpoints) == before
    assert run_record(workdir, old.info.run_id) == old_record
    (branch,) = [r for r in all_runs(workdir) if r.info.run_id != old.info.run_id]
    assert f"logging to a new run {branch.info.run_id} (tagged cnnx.resumed_from)" in result.stdout
    assert branch.info.status == "FINISHED"
    assert branch.data.tags["cnnx.resumed_from"] == old.info.run_id
    assert branch.data.tags["cnnx.resumed_from.checkpoint"] == str(older.resolve())
    assert branch.data.params["trainer.epochs"] == "5"

    # Its history is what its newest checkpoint trained: the checkpoint's two epochs, then its own.
    arrays, header = read_checkpoint(workdir / "branch" / "checkpoints" / "epoch-0005.npz")
    client = store_client(workdir)
    trained = {key: [(step, epoch[key]) for step, epoch in enumerate(header["history"], 1)]
               for key in header["history"][0]}
    logged_per_epoch = {key: metric_history(client, branch.info.run_id, key) for key in trained}
    assert logged_per_epoch == trained
    test_acc = metric_history(client, branch.info.run_id, "test_acc")
    assert [step for step, _ in test_acc] == [5]
    old_histories = old_record[-1]
    assert trained["lr"][:2] == old_histories["lr"][:2]
    assert trained["lr"][2] != old_histories["lr"][2]  # the cosine now spans 5 epochs: another trajectory
    with np.load(client.download_artifacts(branch.info.run_id, "weights.npz", str(tmp_path))) as weights:
        assert sorted(weights.files) == sorted(k[len("model/"):] for k in arrays if k.startswith("model/"))
        for key in weights.files:
            assert np.array_equal(arrays[f"model/{key}"], weights[key]), key

    # Written beside the newer checkpoints of its run, the branch's would prune and mix with them.
    result = run_cli([*run_args(data), "trainer.epochs=5", f"trainer.resume={older}"], workdir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line == (f"cnnx: error: hydra.run.dir: '{workdir / 'run'}' holds checkpoints newer than "
                    f"trainer.resume={older} (newest: checkpoints/epoch-{EPOCHS:04d}.npz), which a run resumed "
                    f"from it would prune and mix with its own; continue from the newest with trainer.resume=true, "
                    f"or give the resumed run another hydra.run.dir"), line
    # named relative to where the command runs, as the README does (a ValueError traceback)
    relative = older.resolve().relative_to(workdir.resolve())
    result = run_cli([*run_args(data), "trainer.epochs=5", f"trainer.resume={relative}"], workdir)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"(newest: checkpoints/epoch-{EPOCHS:04d}.npz)" in result.stderr.strip(), result.stderr
    assert checkpoint_files(checkpoints) == before
    assert len(all_runs(workdir)) == 2

    # Into a folder holding another run's checkpoints (the branch's), as any new run there.
    branch_files = checkpoint_files(workdir / "branch" / "checkpoints")
    result = run_cli([*run_args(data), "trainer.epochs=4", f"trainer.resume={older}", "hydra.run.dir=branch"], workdir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"cnnx: error: hydra.run.dir: '{workdir / 'branch'}' already holds checkpoints of an "
                           f"earlier run (newest: checkpoints/epoch-0005.npz)"), line
    assert checkpoint_files(workdir / "branch" / "checkpoints") == branch_files
    assert len(all_runs(workdir)) == 2

    # Each trajectory resumes its own run: the branch's checkpoints hold the branch's run id.
    result = run_cli([*run_args(data), "trainer.epochs=5", "trainer.resume=true", "hydra.run.dir=branch"], workdir)
    assert result.returncode == 0, result.stderr
    assert "nothing left to train" in result.stdout
    assert len(all_runs(workdir)) == 2
    assert run_record(workdir, old.info.run_id) == old_record


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, data, reference_dir, reference):
    workdir = tmp_path / "copy"
    shutil.copytree(reference_dir, workdir)
    checkpoints = workdir / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-0002.npz", "epoch-0003.npz"]
    newest = checkpoints / "epoch-0003.npz"
    newest.write_bytes(newest.read_bytes()[:1000])

    args = [*run_args(data), "trainer.resume=true"]
    result = run_cli(args, workdir)
    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if line.startswith("cnnx: warning:"))
    assert "epoch-0003.npz" in warning and "truncated" in warning and "falling back to 'epoch-0002.npz'" in warning
    arrays, _ = read_checkpoint(newest)  # written again by the resumed run, complete this time
    _, ref_histories, ref_weights = reference
    assert logged(workdir)[1] == ref_histories  # epoch 3 and test metrics were not logged twice
    for key, value in ref_weights.items():
        assert np.array_equal(arrays[f"model/{key}"], value), key

    for path in checkpoints.iterdir():
        path.write_bytes(path.read_bytes()[:1000])
    result = run_cli(args, workdir)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cnnx: error: ") and "truncated" in last and "epoch-0002.npz" in last
    assert not [r for r in all_runs(workdir) if r.info.status == "RUNNING"]


def test_divergence_names_epoch_and_batch_and_fails_the_run(tmp_path, data):
    result = run_cli(["+experiment=digits_small", "dataset=npz", f"dataset.path={data}", "trainer.epochs=2",
                      "optimizer.lr=1e30"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cnnx: error: loss became nan at epoch 1, batch "), last
    assert "trainer.on_nonfinite=skip_batch" in last and "trainer.grad_clip_norm" in last
    (run,) = all_runs(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("TrainingDiverged: loss became nan at epoch 1")


def test_a_rerun_job_without_tracking_is_told_that_continuing_needs_tracking(tmp_path):
    """A SLURM requeue or Ray retry of a job with tracking=none finds its own checkpoints: the
    refusal advised another hydra.sweep.dir, which a requeued job cannot choose."""
    from cnnx.app import _earlier_checkpoints
    from cnnx.tracking.sweep_job import SweepJob

    job_dir = tmp_path / "sweep" / "3"
    newest = job_dir / "checkpoints" / "epoch-0002.npz"
    config = {"trainer": {"checkpoint": {"dir": None}}, "tracking": {"enabled": False}}
    said = _earlier_checkpoints(newest, config, str(job_dir), SweepJob(link=None, blas_threads=None))
    assert said.endswith("already holds checkpoints of an earlier run (newest: checkpoints/epoch-0002.npz), which a "
                         "new run there would prune and mix with its own; a job that its launcher runs again (a "
                         "SLURM requeue, a Ray retry) continues its checkpoints only with tracking on; choose "
                         "another hydra.sweep.dir")
    config["tracking"]["enabled"] = True
    assert _earlier_checkpoints(newest, config, str(job_dir), SweepJob(link=None, blas_threads=None)).endswith(
        "continue that sweep with sweep.resume=true, or choose another hydra.sweep.dir")
