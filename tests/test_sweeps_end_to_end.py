"""Sweeps through the real CLI and Hydra's real launchers and sweepers, into real MLflow stores.

Every multirun must leave one parent run whose children are all of its jobs, FINISHED, with
the best child and the comparison table recorded on the parent.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from e2e_helpers import (
    all_runs, assert_complete_sweep, git_work_tree, kill_group, list_artifacts, processes, run_cli, run_cli_many,
    store_client, sweep_runs, wait_for_file, wait_until_group_is_gone,
)

pytestmark = pytest.mark.slow

SMALL = ["+experiment=digits_small", "trainer.epochs=1"]
EIGHT_JOBS = ["optimizer.lr=0.02,0.1", "model.layers.conv1.out_channels=4,8", "trainer.batch_size=32,64"]
SWEPT = {"optimizer.lr", "model.layers.conv1.out_channels", "trainer.batch_size"}
#: Each job's plots and model are checked in the joblib sweep into sqlite (forked workers
#: drawing with matplotlib); the other launchers' tests skip them, a second or so per job.
LEAN = ["tracking.log_plots=false", "tracking.log_model=false"]


def test_joblib_sweep_runs_eight_children_under_one_parent(tmp_path):
    commit = git_work_tree(tmp_path)
    result = run_cli(["-m", *SMALL, *EIGHT_JOBS, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                      "+hydra.launcher.idle_worker_timeout=60"], tmp_path)
    client = store_client(tmp_path)
    parent, children = assert_complete_sweep(client, result, jobs=8, swept=SWEPT, models=True)
    # a loky setting the launcher's config does not list reaches joblib (not refused as a typo)
    assert "idle_worker_timeout=60) is launching 8 jobs" in result.stdout + result.stderr
    # the parent and every job record the commit they ran, its tracked files unchanged
    for run in (parent, *children):
        assert run.data.tags["mlflow.source.git.commit"] == commit, run.info.run_name
        assert run.data.tags["cnnx.source.git.dirty"] == "false" and run.data.tags["mlflow.source.name"] == "cnnx"
    # child names state their overrides
    names = {c.info.run_name for c in children}
    assert "epochs=1,lr=0.02,conv1.out_channels=4,batch_size=32" in names, names
    # two workers share the cores: each job's BLAS gets its part
    expected_threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert {c.data.tags["cnnx.blas_threads"] for c in children} == {expected_threads}
    # their progress bars would redraw over each other on the one terminal
    assert {c.data.params["trainer.progress"] for c in children} == {"False"}


def test_submitit_local_sweep_runs_eight_children_under_one_parent(tmp_path):
    result = run_cli(["-m", *SMALL, *LEAN, *EIGHT_JOBS, "hydra/launcher=submitit_local",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert_complete_sweep(store_client(tmp_path), result, jobs=8, swept=SWEPT)
    # submitit's own lines: once in each job's console log, none in its app.log
    for job in range(8):
        assert "submitit" not in (tmp_path / "sweep" / str(job) / "app.log").read_text()
    outs = list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))
    assert len(outs) == 8 and all(out.read_text().count("Job completed successfully") == 1 for out in outs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(url: str, server: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow server at {url} not ready after {timeout} s")


def test_joblib_sweep_logs_to_a_shared_mlflow_server(tmp_path):
    from mlflow import MlflowClient

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w")
    # Without the GenAI job runner: it starts three more processes that import all of MLflow,
    # about 15 s of CPU that the sweep would wait for on 2 cores; tracking does not use it.
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=tmp_path, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_until_healthy(url, server)
        # loky's own fresh interpreters here; the sqlite test above runs forked workers
        # Models too: their files go through the server's artifact proxy.
        result = run_cli(["-m", *SMALL, "tracking.log_plots=false", *EIGHT_JOBS, "hydra/launcher=joblib",
                          "hydra.launcher.n_jobs=2", "sweep.fork_workers=false", f"tracking.uri={url}"], tmp_path)
        assert_complete_sweep(MlflowClient(url), result, jobs=8, swept=SWEPT, models=True)
        assert not (tmp_path / "mlflow.db").exists()
        # MLflow's links for runs on a server go to stderr: stdout keeps the runs' own lines.
        assert "View run" not in result.stdout and result.stderr.count("View run") == 9, result.stdout
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers, by the server's pid
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


#: The search space of +hparams=lenet_optuna.
OPTUNA_SEARCHED = {"optimizer.lr", "model.layers.conv1.out_channels", "model.layers.conv2.out_channels",
                   "trainer.batch_size"}


def assert_optuna_best_is_the_parents(client, parent, sweep_dir: Path, monitor: str):
    """Optuna's best trial (optimization_results.yaml) is the child the parent names best."""
    optuna = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert parent.data.metrics[f"best_{monitor}"] == pytest.approx(optuna["best_value"])
    best = client.get_run(parent.data.tags["cnnx.sweep.best_run_id"])
    assert {k: float(best.data.params[k]) for k in OPTUNA_SEARCHED} == pytest.approx(
        {k: float(v) for k, v in optuna["best_params"].items()})


def test_optuna_sweep_records_the_best_trial_on_the_parent(tmp_path):
    result = run_cli(["-m", *SMALL, *LEAN, "+hparams=lenet_optuna", "hydra.sweeper.n_trials=4",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = store_client(tmp_path)
    # the table's columns are the search space, also where the sampler drew a choice twice
    parent, children = assert_complete_sweep(client, result, jobs=4, swept=OPTUNA_SEARCHED)
    assert set(json.loads(parent.data.tags["cnnx.sweep.swept"])) == OPTUNA_SEARCHED
    # each child names its trial (Hydra's job number, Optuna's trial number)
    assert sorted(c.data.tags["cnnx.sweep.job"] for c in children) == ["0", "1", "2", "3"]
    assert_optuna_best_is_the_parents(client, parent, tmp_path / "sweep", "val_acc")
    assert "optimization_results.yaml" in list_artifacts(client, parent.info.run_id)


def test_an_optuna_sweep_prints_hydras_lines_not_those_of_the_libraries_it_imports(tmp_path):
    """Before: without MLflow (which imports alembic before Hydra sets up logging), Optuna's
    storage imported alembic mid-sweep and its seven "setup plugin alembic..." INFO lines led
    the console output."""
    result = run_cli(["-m", *SMALL, *LEAN, "tracking=none", "+hparams=lenet_optuna", "hydra.sweeper.n_trials=1",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    hydra_lines = [line for line in result.stdout.splitlines() if "[HYDRA]" in line]
    assert any("Launching 1 jobs locally" in line for line in hydra_lines), result.stdout[:3000]
    assert any("Best value:" in line for line in hydra_lines), result.stdout[-3000:]
    assert not any("alembic" in line for line in hydra_lines), hydra_lines


def test_an_optuna_search_for_the_lowest_loss_finds_the_run_the_parent_names_best(tmp_path):
    result = run_cli(["-m", *SMALL, *LEAN, "+hparams=lenet_optuna", "hydra.sweeper.n_trials=4",
                      "trainer.monitor=val_loss", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = store_client(tmp_path)
    (parent,), children = sweep_runs(client)
    assert parent.info.status == "FINISHED" and len(children) == 4
    losses = {c.info.run_id: c.data.metrics["val_loss"] for c in children}  # 1 epoch: last = best
    assert losses[parent.data.tags["cnnx.sweep.best_run_id"]] == min(losses.values())
    assert_optuna_best_is_the_parents(client, parent, tmp_path / "sweep", "val_loss")


def start_sweep_until_training(args: list[str], cwd: Path, summaries: int, checkpoint: Path | None = None,
                               **popen) -> subprocess.Popen:
    """A sweep in the background, returned once ``summaries`` jobs have begun to train, or,
    for a launcher whose jobs print to files of their own (submitit), once ``checkpoint``
    is written.

    Slowed batches (the trainer's test hook) keep each job training for a few seconds, so a
    signal sent next lands inside a training loop rather than between jobs.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment["CNNX_TEST_BATCH_DELAY"] = "0.05"
    sweep = subprocess.Popen([sys.executable, "-m", "cnnx", *args], cwd=cwd, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    if checkpoint is not None:
        wait_for_file(checkpoint, sweep)
        return sweep
    seen = 0
    for line in sweep.stdout:
        seen += "Total params" in line
        if seen == summaries:
            break
    assert seen == summaries and sweep.poll() is None, f"the sweep ended before {summaries} jobs trained"
    return sweep


def sweep_resume_command(args: list[str]) -> str:
    return shlex.join(["python", "-m", "cnnx", *args, "sweep.resume=true"])


def test_interrupted_sweep_resumes_running_only_the_missing_jobs(tmp_path):
    four_jobs = EIGHT_JOBS[:2]
    args = ["-m", *SMALL, *LEAN, *four_jobs]
    # The basic launcher runs jobs in order; the third model summary means jobs 0 and 1 have
    # finished and job 2 is starting to train.
    first = start_sweep_until_training([*args, f"hydra.sweep.dir={tmp_path / 'first'}"], tmp_path, summaries=3)
    time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=60)
    # the command it prints continues the sweep, not one job's checkpoint
    resume_line = next(line for line in stderr.splitlines() if line.startswith("cnnx: sweep interrupted"))
    assert sweep_resume_command([*args, f"hydra.sweep.dir={tmp_path / 'first'}"]) in resume_line, resume_line
    assert "stopped ones continue from their last checkpoint" in resume_line, resume_line
    assert "trainer.resume" not in resume_line and "hydra.run.dir" not in resume_line
    client = store_client(tmp_path)
    (parent,), children = sweep_runs(client)
    assert parent.info.status == "FAILED"  # interrupted: never left RUNNING
    done_before = {c.info.run_id for c in children if c.info.status == "FINISHED"}
    stopped = [c for c in children if c.info.status != "FINISHED"]
    assert len(done_before) == 2 and [c.info.status for c in stopped] == ["KILLED"], children

    # Rerun elsewhere (the default sweep directory is a new timestamp): the stopped job is
    # found through its run, which records where its checkpoints are. The same sweep, though
    # its lists are given in another order and its store spelled out.
    same_jobs = ["optimizer.lr=0.1,0.02", "model.layers.conv1.out_channels=8,4"]
    assert sorted(same_jobs) != sorted(four_jobs)
    result = run_cli(["-m", *SMALL, *LEAN, *same_jobs, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                      f"hydra.sweep.dir={tmp_path / 'second'}", "sweep.resume=true"], tmp_path)
    assert f"cnnx: resuming sweep {parent.info.run_name!r}" in result.stderr, result.stderr[-2000:]
    swept = {"optimizer.lr", "model.layers.conv1.out_channels"}
    _, finished = assert_complete_sweep(client, result, jobs=4, swept=swept)
    assert done_before | {stopped[0].info.run_id} <= {c.info.run_id for c in finished}
    assert result.stderr.count("cnnx: skipping") == 2
    assert result.stderr.count("cnnx: continuing") == 1
    assert str(tmp_path / "first" / "2" / "checkpoints") in result.stderr
    assert "cnnx: best of 4 finished runs: " in result.stderr, result.stderr
    # only the missing jobs trained, the stopped one from where it stopped
    assert result.stdout.count("Total params") == 2
    assert result.stdout.count("resumed from ") == 1 and "batch" in result.stdout
    # the continued run's epochs were logged once each
    continued = client.get_metric_history(stopped[0].info.run_id, "val_acc")
    assert [m.step for m in continued] == [1]


def test_a_new_sweep_in_the_directory_of_an_earlier_one_is_refused_before_it_starts(tmp_path):
    """Its jobs pruned the earlier jobs' checkpoints (keep_last counts theirs too), from which
    sweep.resume=true would have continued them."""
    args = ["-m", *SMALL, *LEAN, "optimizer.lr=0.02,0.1", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    checkpoints = {path: path.read_bytes() for path in (tmp_path / "sweep").glob("*/checkpoints/*")}
    assert len(checkpoints) == 2
    runs = {run.info.run_id for run in all_runs(tmp_path)}

    again = run_cli(args, tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"cnnx: error: hydra.sweep.dir: '{tmp_path / 'sweep'}' already holds checkpoints of an earlier sweep's "
        "jobs (0/checkpoints/epoch-0001.npz), which this sweep's would prune and mix with their own; continue that "
        "sweep with sweep.resume=true, or choose another hydra.sweep.dir"]
    assert {path: path.read_bytes() for path in (tmp_path / "sweep").glob("*/checkpoints/*")} == checkpoints
    assert {run.info.run_id for run in all_runs(tmp_path)} == runs  # not even a parent run

    resumed = run_cli([*args, "sweep.resume=true"], tmp_path)  # in the same directory
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stderr.count("cnnx: skipping") == 2


def test_resuming_a_grid_with_other_values_in_the_directory_of_an_earlier_one_is_refused_before_it_starts(tmp_path):
    """A grid extended by a value is another sweep: sweep.resume=true finds no run of it to
    continue, and its jobs would find the earlier jobs' checkpoints in their directories."""
    from mlflow.entities import ViewType

    sweep_dir = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    first = run_cli(["-m", *SMALL, *LEAN, "optimizer.lr=0.02,0.1", sweep_dir], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    checkpoints = {path: path.read_bytes() for path in (tmp_path / "sweep").glob("*/checkpoints/*")}
    client = store_client(tmp_path)
    runs = {run.info.run_id: run.info.status
            for run in client.search_runs([e.experiment_id for e in client.search_experiments()],
                                          run_view_type=ViewType.ALL)}

    extended = run_cli(["-m", *SMALL, *LEAN, "optimizer.lr=0.02,0.1,0.5", sweep_dir, "sweep.resume=true"], tmp_path)
    assert extended.returncode == 2, extended.stderr[-2000:]
    assert extended.stderr.strip().splitlines() == [
        f"cnnx: error: hydra.sweep.dir: '{tmp_path / 'sweep'}' already holds checkpoints of an earlier sweep's "
        "jobs (0/checkpoints/epoch-0001.npz), which this sweep's would prune and mix with their own, and "
        "sweep.resume=true found no earlier run of this sweep in experiment 'digits_small' to continue them; "
        "resume a sweep with the overrides and value lists it was started with, or choose another hydra.sweep.dir"]
    assert "Total params" not in extended.stdout
    assert {path: path.read_bytes() for path in (tmp_path / "sweep").glob("*/checkpoints/*")} == checkpoints
    assert {run.info.run_id: run.info.status  # not even a parent run in the trash
            for run in client.search_runs([e.experiment_id for e in client.search_experiments()],
                                          run_view_type=ViewType.ALL)} == runs


def test_resuming_a_sweep_whose_process_still_runs_is_refused_until_it_is_stopped(tmp_path):
    """"My sweep died, resubmit it" while it runs: both processes would train the same jobs into
    the same runs, each epoch logged twice."""
    args = ["-m", "+experiment=digits_small", *LEAN, "trainer.epochs=20", "optimizer.lr=0.02,0.1"]
    first = start_sweep_until_training(args, tmp_path, summaries=1)
    try:
        client = store_client(tmp_path)
        (parent,), (child,) = sweep_runs(client)
        refused = run_cli([*args, "sweep.resume=true"], tmp_path)
        assert first.poll() is None, "the first sweep must still run"
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert refused.stderr.strip().splitlines() == [
            f"cnnx: error: sweep.resume=true: sweep {parent.info.run_name!r} (parent run {parent.info.run_id}) "
            f"is still running, in process {first.pid} on this host ({socket.gethostname()}); wait for it to "
            f"end, or stop it first (Ctrl-C in its terminal, or kill {first.pid}), then resume it"]
        assert "Total params" not in refused.stdout
        (after,), children = sweep_runs(client)
        assert after.data.tags == parent.data.tags and [c.info.run_id for c in children] == [child.info.run_id]
        assert len(list((tmp_path / "multirun").glob("*/*"))) == 1  # the refused sweep has no directory
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130

    resumed = run_cli([*args, "sweep.resume=true"], tmp_path)
    assert f"cnnx: continuing 'epochs=20,lr=0.02' (run {child.info.run_id}, KILLED)" in resumed.stderr
    assert_complete_sweep(client, resumed, jobs=2, swept={"optimizer.lr"})
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")] == list(range(1, 21))
    assert len(client.get_metric_history(child.info.run_id, "test_acc")) == 1


def test_a_sweep_killed_outright_resumes_though_it_left_its_runs_running(tmp_path):
    """SIGKILL, the OOM killer: nothing ends the runs, and the process is gone."""
    args = ["-m", "+experiment=digits_small", *LEAN, "trainer.epochs=3", "optimizer.lr=0.02,0.1"]
    first = start_sweep_until_training(args, tmp_path, summaries=1, start_new_session=True)
    for line in first.stdout:
        if re.search(r"epoch +1/3", line):  # its checkpoint is written before the line
            break
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    client = store_client(tmp_path)
    (parent,), (child,) = sweep_runs(client)
    assert parent.info.status == "RUNNING" and child.info.status == "RUNNING"

    resumed = run_cli([*args, "sweep.resume=true"], tmp_path)
    assert f"cnnx: continuing 'epochs=3,lr=0.02' (run {child.info.run_id}, RUNNING)" in resumed.stderr, \
        resumed.stderr[-2000:]
    assert_complete_sweep(client, resumed, jobs=2, swept={"optimizer.lr"})


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_ctrl_c_while_a_job_finishes_stops_the_sweep_once_that_job_is_logged(tmp_path, signum):
    # SIGTERM: the sweep stopped, but said SIGINT and exited 130.
    name = signal.Signals(signum).name
    args = ["-m", *SMALL, "optimizer.lr=0.02,0.1"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    sweep = subprocess.Popen([sys.executable, "-m", "cnnx", *args], cwd=tmp_path, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in sweep.stdout:
        if "epoch   1/1" in line:  # its last epoch: the run's report (plots, model) comes next
            break
    time.sleep(0.1)
    sweep.send_signal(signum)
    stdout, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signum, stderr[-2000:]
    assert f"{name} received while the run was finishing; it finished first" in stdout + stderr, stdout + stderr
    assert "Total params" not in stdout, "the next job must not start"
    assert f"cnnx: sweep interrupted by {name}; continue it with: {sweep_resume_command(args)}" in stderr, \
        stderr[-2000:]
    (parent,), children = sweep_runs(store_client(tmp_path))
    assert parent.info.status == "FAILED" and [c.info.status for c in children] == ["FINISHED"]


def test_ctrl_c_on_a_parallel_sweep_leaves_no_run_running_and_says_how_to_continue(tmp_path):
    args = ["-m", *SMALL, *LEAN, "trainer.epochs=3", "optimizer.lr=0.02,0.1,0.2",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    # A session of its own: the signal goes to the whole group, as a terminal's Ctrl-C does.
    sweep = start_sweep_until_training(args, tmp_path, summaries=2, start_new_session=True)
    time.sleep(0.3)
    os.killpg(sweep.pid, signal.SIGINT)
    _, stderr = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, stderr[-2000:]
    # Whichever comes first, the sweep's own Ctrl-C or a worker's interrupted job, it ends so:
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("cnnx: sweep interrupted") and last.endswith(
        f"continue it with: {sweep_resume_command(args)} (FINISHED jobs are skipped, "
        "stopped ones continue from their last checkpoint)"), stderr[-3000:]
    (parent,), children = sweep_runs(store_client(tmp_path))
    assert parent.info.status == "FAILED" and children
    assert [c.info.status for c in children if c.info.status == "RUNNING"] == []
    # The parent's table says what the store says, even of the jobs the sweep itself stopped.
    client = store_client(tmp_path)
    table = client.download_artifacts(parent.info.run_id, "comparison.csv", str(tmp_path))
    statuses = {row["run_id"]: row["status"] for row in csv.DictReader(open(table))}
    assert statuses == {c.info.run_id: c.info.status for c in children}


STOPPED_JOBS_CONTINUE = "(FINISHED jobs are skipped, stopped ones continue from their last checkpoint)"


@pytest.mark.parametrize("launcher, signum, to_group", [
    # to the sweep's process alone (kill PID): joblib's forked workers, submitit's local jobs
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], signal.SIGTERM, False),
    (["hydra/launcher=submitit_local"], signal.SIGTERM, False),
    # to its whole process group (timeout, systemd, a closed terminal): fresh joblib workers,
    # and jobs run in the sweep's own process, whose trainer takes the signal over
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "sweep.fork_workers=false"], signal.SIGTERM, True),
    ([], signal.SIGHUP, True),
    # joblib's resource tracker ignores SIGINT and SIGTERM, not SIGHUP: it died, and joblib
    # printed a warning and its new tracker a traceback
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], signal.SIGHUP, True),
], ids=["joblib-sigterm", "submitit-sigterm", "fresh-workers-sigterm-to-group", "basic-sighup-to-group",
        "joblib-sighup-to-group"])
def test_sigterm_or_sighup_stops_a_sweep_as_ctrl_c_does(tmp_path, launcher, signum, to_group):
    """Only SIGINT became an exception: any other signal killed the sweep's process outright,
    leaving its parent run RUNNING, no resume hint, and workers or jobs running on their own."""
    args = ["-m", *SMALL, *LEAN, "trainer.epochs=3", "optimizer.lr=0.02,0.1,0.2", *launcher,
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    submitit = "hydra/launcher=submitit_local" in launcher
    sweep = start_sweep_until_training(
        args, tmp_path, summaries=1 if not launcher else 2, start_new_session=True,
        checkpoint=tmp_path / "sweep" / "0" / "checkpoints" / "epoch-0001.npz" if submitit else None)
    time.sleep(0.3)
    (os.killpg if to_group else os.kill)(sweep.pid, signum)
    try:
        _, stderr = sweep.communicate(timeout=120)
        left = wait_until_group_is_gone(sweep.pid)
    finally:
        kill_group(sweep.pid)
    name = signal.Signals(signum).name
    assert sweep.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr and "died unexpectedly" not in stderr, stderr[-3000:]
    (said,) = [line for line in stderr.splitlines() if line.startswith("cnnx: sweep interrupted")]
    assert said.startswith(f"cnnx: sweep interrupted by {name}") and said.endswith(
        f"continue it with: {sweep_resume_command(args)} {STOPPED_JOBS_CONTINUE}"), stderr[-3000:]
    assert left == [], "its workers and jobs must stop with it"
    client = store_client(tmp_path)
    (parent,), children = sweep_runs(client)
    assert parent.info.status == "FAILED" and children
    assert [c.info.status for c in children if c.info.status == "RUNNING"] == []
    assert "comparison.csv" in list_artifacts(client, parent.info.run_id)


def test_a_sigint_to_a_submitit_sweeps_process_alone_stops_its_jobs(tmp_path):
    """kill -INT PID (not a terminal's Ctrl-C, which reaches the jobs too) left submitit's local
    jobs training to the end, after the sweep had called them KILLED and summarised."""
    args = ["-m", *SMALL, *LEAN, "trainer.epochs=60", "optimizer.lr=0.02,0.1", "hydra/launcher=submitit_local",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    sweep = start_sweep_until_training(args, tmp_path, summaries=0, start_new_session=True,
                                       checkpoint=tmp_path / "sweep" / "0" / "checkpoints" / "epoch-0001.npz")
    os.kill(sweep.pid, signal.SIGINT)
    try:
        _, stderr = sweep.communicate(timeout=120)
        left = wait_until_group_is_gone(sweep.pid, timeout=30)
    finally:
        kill_group(sweep.pid)
    assert sweep.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert left == [], "its jobs must stop with it"
    (parent,), children = sweep_runs(store_client(tmp_path))
    assert parent.info.status == "FAILED"
    assert sorted(c.info.status for c in children) == ["KILLED", "KILLED"]


def test_a_killed_parallel_worker_stops_the_sweep_in_one_line_that_says_how_to_continue(tmp_path):
    """The OOM killer or a kill -9 of a joblib worker printed joblib's TerminatedWorkerError
    traceback, some 55 lines, and no way to continue."""
    args = ["-m", *SMALL, *LEAN, "trainer.epochs=3", "optimizer.lr=0.02,0.1,0.2", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2"]
    sweep = start_sweep_until_training(args, tmp_path, summaries=2, start_new_session=True)
    time.sleep(0.3)
    worker = next(p["pid"] for p in processes() if p["ppid"] == sweep.pid and "resource_tracker" not in p["command"])
    os.kill(worker, signal.SIGKILL)
    _, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signal.SIGKILL, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("cnnx: error")]
    assert errors == [f"cnnx: error: a worker process of the sweep was killed by SIGKILL (out of memory?); "
                      f"continue it with: {sweep_resume_command(args)} {STOPPED_JOBS_CONTINUE}"], stderr[-3000:]
    (parent,), children = sweep_runs(store_client(tmp_path))
    assert parent.info.status == "FAILED" and children
    assert [c.info.status for c in children if c.info.status == "RUNNING"] == []


def test_sweep_with_an_unusable_store_stops_before_any_job(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    result = run_cli(["-m", *SMALL, "optimizer.lr=0.02,0.1", f"tracking.uri=sqlite:///{tmp_path}/a_file/runs.db"],
                     tmp_path)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cnnx: error: cannot use MLflow store") and "tracking.uri" in last
    assert "Traceback" not in result.stderr and "Total params" not in result.stdout + result.stderr


def test_sweep_against_a_server_that_is_down_fails_at_once_in_one_line(tmp_path):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    # MLflow's own retries would take minutes here: the timeout is the guard, not a speed test.
    result = run_cli(["-m", *SMALL, "optimizer.lr=0.02,0.1", f"tracking.uri={uri}"], tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"cnnx: error: cannot reach MLflow tracking server '{uri}' (tracking.uri): Connection refused"
    assert "Retrying" not in result.stdout + result.stderr and "Total params" not in result.stdout + result.stderr


def test_a_store_from_the_environment_is_named_as_the_environment(tmp_path):
    """It was named tracking.uri, a setting the user never gave: a server, and a relative
    sqlite path, which the sweep makes absolute."""
    uri = f"http://127.0.0.1:{_free_port()}"
    result = run_cli(["-m", *SMALL, "optimizer.lr=0.02,0.1"], tmp_path, timeout=120, env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"cnnx: error: cannot reach MLflow tracking server '{uri}' ($MLFLOW_TRACKING_URI): Connection refused")
    (tmp_path / "a_file").write_text("not a folder")
    result = run_cli(["-m", *SMALL, "optimizer.lr=0.02,0.1"], tmp_path, env={"MLFLOW_TRACKING_URI": "sqlite:///a_file/m.db"})
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cnnx: error: cannot use MLflow store 'sqlite:///{tmp_path}/a_file/m.db' "
                           "($MLFLOW_TRACKING_URI)"), last


def test_sweep_with_a_mistyped_override_leaves_no_parent_run_behind(tmp_path):
    from mlflow.entities import ViewType

    result = run_cli(["-m", *SMALL, "optimzer.lr=0.02,0.1"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("cnnx: error: unknown config key optimzer")
    assert all_runs(tmp_path) == []  # the active runs: no empty FAILED parent to clutter the experiment
    client = store_client(tmp_path)
    (parent,) = client.search_runs([e.experiment_id for e in client.search_experiments()], run_view_type=ViewType.ALL)
    assert parent.info.lifecycle_stage == "deleted" and parent.info.status == "FAILED"
    # So resuming it finds nothing to continue, and says so.
    again = run_cli(["-m", *SMALL, "optimzer.lr=0.02,0.1", "sweep.resume=true"], tmp_path)
    assert "cnnx: sweep.resume=true found no earlier run of this sweep with jobs in experiment " \
           "'digits_small'; starting it" in again.stderr, again.stderr


#: Settings that spoil every job of a sweep: (overrides, the one line that refuses them before
#: the sweep's parent run exists). Each job would refuse the first ones, under that parent.
PRE_SWEEP_MISTAKES = [
    (["trainer.monitor=val_accuracy"],
     "trainer.monitor='val_accuracy' is not a metric the trainer records; accepted: val_acc, val_loss, train_acc, "
     "train_loss"),
    (["+sweep.resum=true"], "unknown config key sweep.resum (added with +sweep.resum); accepted keys here: resume, "
                            "fork_workers"),
    # unknown whatever its value: every job failed on it
    (["+trainer.foo=1,2"], "unknown config key trainer.foo (added with +trainer.foo); accepted keys here: epochs, "
                           "batch_size, eval_batch_size, monitor, progress, augment, early_stopping, checkpoint, resume, "
                           "on_nonfinite, grad_clip_norm, blas_threads"),
    (["+sed=3"], "unknown config key sed (added with +sed=3): nothing refers to it as ${sed}; did you mean seed=3?"),
    (["+hparams=lenet_optuna", "trainer.monitor=val_loss", "hydra.sweeper.direction=maximize"],
     "hydra.sweeper.direction=maximize contradicts trainer.monitor=val_loss: a sweep's best run is the one of lowest "
     "val_loss; accepted: hydra.sweeper.direction=minimize"),
    # Optuna's search space is keyed by dotted names: the override reached params.optimizer, then
    # lr, and said "unknown config key hydra.sweeper.params.optimizer; accepted keys here:
    # optimizer.lr, ...", or, unquoted, that Hydra's config cannot be swept.
    *[(["+hparams=lenet_optuna", f"hydra.sweeper.params.optimizer.lr={space}"],
       f"{key}: no override can set an entry of hydra.sweeper.params{held}: its names hold dots, which an "
       "override reads as nested keys; sweep the key on the command line instead, which replaces its entry: "
       "optimizer.lr=A,B (or, with hydra/sweeper=optuna, optimizer.lr='interval(LOW, HIGH)')")
      for space, key, held in [("'interval(0.01,0.1)'", "hydra.sweeper.params.optimizer", " (optimizer.lr is there)"),
                               ("interval(0.01,0.1)", "hydra.sweeper.params.optimizer.lr", "")]],
    (["hydra/launcher=joblib", "+hydra.launcher.njobs=2"],
     "unknown config key hydra.launcher.njobs (added with +hydra.launcher.njobs); accepted keys here: n_jobs, backend, "
     "prefer, require, verbose, timeout, pre_dispatch, batch_size, temp_folder, max_nbytes, mmap_mode, "
     "idle_worker_timeout"),
    (["scheduler=cosine", "scheduler.warmup_epochs=5", "trainer.epochs=2"],
     "scheduler.warmup_epochs=5 is longer than the run, trainer.epochs=2; accepted: 0 <= scheduler.warmup_epochs "
     "<= trainer.epochs"),
    (["hydra/launcher=joblib", "+hydra.launcher.idle_worker_timeout=abc"],
     "hydra.launcher.idle_worker_timeout='abc' is not a positive number of seconds; accepted: a number > 0 (how long an idle "
     "worker lives)"),
    # values every job refuses alike: a FAILED child per job, each saying the same
    (["trainer.epochs=-1"], "trainer.epochs must be a positive integer, got -1"),
    (["trainer.batch_size=0"], "trainer.batch_size must be a positive integer, got 0"),
    (["hydra/launcher=submitit_local", "+hydra.launcher.cpus_per_tsk=1"],
     "unknown config key hydra.launcher.cpus_per_tsk (added with +hydra.launcher.cpus_per_tsk); accepted keys here: "
     "submitit_folder, timeout_min, cpus_per_task, gpus_per_node, tasks_per_node, mem_gb, nodes, name, stderr_to_stdout"),
]


def test_a_setting_that_spoils_every_job_is_refused_before_the_sweep_starts(tmp_path):
    runs = [(["-m", *SMALL, "optimizer.lr=0.01,0.1", *overrides], tmp_path / f"case{n}")
            for n, (overrides, _) in enumerate(PRE_SWEEP_MISTAKES)]
    for _, cwd in runs:
        cwd.mkdir()
    problems = []
    for (args, cwd), (_, line), result in zip(runs, PRE_SWEEP_MISTAKES, run_cli_many(runs), strict=True):
        if result.returncode != 2 or result.stderr.strip().splitlines() != [f"cnnx: error: {line}"]:
            problems.append(f"{args[4:]}: exit {result.returncode}, stderr ends {result.stderr[-300:]!r}")
        elif (cwd / "mlflow.db").exists() or "Total params" in result.stdout:  # no parent run, no store even
            problems.append(f"{args[4:]}: refused after the sweep started")
    assert not problems, "\n".join(problems)


#: Components every job shares that no job could build: (overrides, how the one line that
#: refuses them before the parent run exists starts, as a single run's does).
SHARED_COMPONENT_MISTAKES = [
    (["model.layers.relu1.type=tanhh"], "unknown layer type 'tanhh' at model.layers.relu1 (did you mean 'tanh'?); "
                                        "available: "),
    (["+model.layers.conv1.foo=1"], "unknown option model.layers.conv1.foo for layer 'conv2d'; accepted: out_channels,"),
    (["model=resnet_small", "+model.layers.block1.layers.conv1.foo=1"],
     "unknown option model.layers.block1.layers.conv1.foo for layer 'conv2d'; accepted: out_channels,"),
    # The sweep varies optimizer.lr, which leaves the optimizer's type and other options alone.
    (["optimizer.type=sgdd"], "unknown optimizer type 'sgdd' at optimizer (did you mean 'sgd'?); available: "),
    (["+optimizer.foo=1"], "unknown option optimizer.foo for optimizer 'sgd'; accepted: lr, momentum,"),
    (["loss.type=xent"], "unknown loss type 'xent' at loss; available: "),
    (["+loss.foo=1"], "unknown option loss.foo for loss 'cross_entropy'; accepted: label_smoothing"),
    (["dataset.type=digitz"], "unknown dataset type 'digitz' at dataset (did you mean 'digits'?); available: "),
    (["+dataset.foo=1"], "unknown option dataset.foo for dataset 'digits'; accepted: size,"),
    (["+scheduler.foo=1"], "unknown option scheduler.foo for scheduler "),
]


def test_a_component_that_every_job_refuses_is_refused_before_the_sweep_starts(tmp_path):
    from mlflow.entities import ViewType

    runs = [(["-m", *SMALL, "optimizer.lr=0.01,0.1", *overrides], tmp_path / f"case{n}")
            for n, (overrides, _) in enumerate(SHARED_COMPONENT_MISTAKES)]
    # The store every run and sweep would log to, created here: no run may be added to it.
    client = store_client(tmp_path)
    client.search_experiments()
    for _, cwd in runs:
        cwd.mkdir()
        (cwd / "mlflow.db").write_bytes((tmp_path / "mlflow.db").read_bytes())
    problems = []
    for (args, cwd), (_, start), result in zip(runs, SHARED_COMPONENT_MISTAKES, run_cli_many(runs), strict=True):
        lines = result.stderr.strip().splitlines()
        if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith(f"cnnx: error: {start}"):
            problems.append(f"{args[4:]}: exit {result.returncode}, stderr ends {result.stderr[-300:]!r}")
            continue
        store = store_client(cwd)
        if store.search_runs([e.experiment_id for e in store.search_experiments(view_type=ViewType.ALL)],
                             run_view_type=ViewType.ALL) or "Total params" in result.stdout:
            problems.append(f"{args[4:]}: refused after the sweep started")
    assert not problems, "\n".join(problems)


def test_a_job_refused_before_training_is_a_failed_child_that_says_why(tmp_path):
    result = run_cli(["-m", *SMALL, *LEAN, "optimizer.lr=nan,0.1"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cnnx: error: optimizer: SGD: lr=nan is not finite" in result.stderr
    assert "cnnx: best of 1 finished run (1 more stopped or failed): epochs=1,lr=0.1" in result.stderr
    (parent,), children = sweep_runs(store_client(tmp_path))
    assert parent.info.status == "FAILED"
    assert sorted((c.info.run_name, c.info.status) for c in children) == [
        ("epochs=1,lr=0.1", "FINISHED"), ("epochs=1,lr=nan", "FAILED")]
    failed = next(c for c in children if c.info.status == "FAILED")
    assert failed.data.tags["cnnx.error"].startswith("optimizer: SGD: lr=nan is not finite")
    # each child names its job, the one refused before it had a run of its own too
    assert {c.info.run_name: c.data.tags["cnnx.sweep.job"] for c in children} == {
        "epochs=1,lr=nan": "0", "epochs=1,lr=0.1": "1"}
    table = store_client(tmp_path).download_artifacts(parent.info.run_id, "comparison.csv", str(tmp_path))
    assert {row["optimizer.lr"]: row["status"] for row in csv.DictReader(open(table))} == {
        "nan": "FAILED", "0.1": "FINISHED"}


def test_a_sweep_whose_every_job_fails_says_so_naming_them_all(tmp_path):
    """It showed the first job's error and nothing else: not that the others failed too."""
    result = run_cli(["-m", *SMALL, *LEAN, "optimizer.lr=nan,-1"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.rstrip().splitlines()[-1] == (
        "cnnx: no run of the sweep finished (2 failed: 'epochs=1,lr=nan', 'epochs=1,lr=-1'); each FAILED run's "
        "reason is its tag error (tag cnnx.error when it failed before training)")


def test_a_parallel_job_that_fails_says_why_in_its_own_log(tmp_path):
    """A SLURM job's process exits 0 when its job fails (Hydra hands the error to the sweep):
    its log said "Job completed successfully" and nothing else."""
    result = run_cli(["-m", *SMALL, "optimizer.lr=0.1,-1", "tracking=none", "hydra/launcher=joblib",
                      "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    said = "cnnx: error: optimizer: SGD: lr=-1.0 is out of range; accepted: lr > 0"
    assert result.stderr.count(said) == 1, result.stderr[-2000:]  # not once more from the job
    assert (tmp_path / "sweep" / "1" / "app.log").read_text().count(said) == 1
    assert "cnnx: error" not in (tmp_path / "sweep" / "0" / "app.log").read_text()


def test_sweep_without_tracking_writes_no_store(tmp_path):
    result = run_cli(["-m", *SMALL, "optimizer.lr=0.02,0.1", "tracking=none", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                     tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # on the shared console each line names its job; each job's own log needs no tag
    lines = result.stdout.splitlines()
    assert [line for line in lines if "val_acc (best epoch)" in line][0].startswith("[#0] val_acc (best epoch) = ")
    assert sum(line.startswith("[#1] val_acc (best epoch) = ") for line in lines) == 1
    assert sum(line.startswith("[#1] Total params") for line in lines) == 1
    logs = [(tmp_path / "sweep" / str(job) / "app.log").read_text() for job in (0, 1)]
    assert [log.count("] - val_acc (best epoch)") for log in logs] == [1, 1]
    assert "[#" not in logs[0] + logs[1]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "sweep" / "mlflow_sweep.json").exists()


def test_a_sweep_dir_another_running_sweep_holds_is_refused_and_taken_over_once_it_ended(tmp_path):
    """Two sweeps started in the same second share Hydra's default sweep dir: the second's link
    replaced the first's, and every job of both became a child of one parent."""
    from cnnx.tracking.sweep_link import SweepLink
    from cnnx.tracking.sweep_owner import driver_tags

    client = store_client(tmp_path)
    experiment = client.create_experiment("digits_small")
    first = client.create_run(experiment, run_name="sweep first", tags={"cnnx.sweep.role": "parent", **driver_tags()})
    link = SweepLink(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment, first.info.run_id, "digits_small")
    link.write(tmp_path / "sw")
    command = ["-m", *SMALL, *LEAN, "optimizer.lr=0.01,0.1", "hydra.sweep.dir=sw"]
    result = run_cli(command, tmp_path)
    assert result.returncode == 2
    assert result.stderr.rstrip().splitlines()[-1] == (
        f"cnnx: error: hydra.sweep.dir '{tmp_path / 'sw'}' belongs to another sweep, still running (parent run "
        f"{first.info.run_id}); sweeps started in the same second share Hydra's default sweep dir: set "
        f"hydra.sweep.dir, or start this one a second later")
    assert SweepLink.read(tmp_path / "sw") == link
    active = [r for r in all_runs(tmp_path)]
    assert [r.info.run_id for r in active] == [first.info.run_id]  # the refused sweep's parent is in the trash

    client.set_terminated(first.info.run_id, "FINISHED")
    result = run_cli(command, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert SweepLink.read(tmp_path / "sw").parent_run_id != first.info.run_id


def test_a_sweep_resumed_with_its_values_in_another_order_finishes_in_its_pinned_directory(tmp_path):
    """The resumed sweep numbers its jobs as the values are typed: a new job landed in a job folder
    holding the stopped job's checkpoints and failed, and after that no order could finish it."""
    sweep_dir = f"hydra.sweep.dir={tmp_path / 'sw'}"
    first = start_sweep_until_training(["-m", *SMALL, *LEAN, "optimizer.lr=0.01,0.05", sweep_dir], tmp_path,
                                       summaries=1)
    time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert list((tmp_path / "sw" / "0" / "checkpoints").glob("*.npz"))  # lr=0.01 stopped, with a checkpoint

    reordered = run_cli(["-m", *SMALL, *LEAN, "optimizer.lr=0.05,0.01", sweep_dir, "sweep.resume=true"], tmp_path)
    assert reordered.returncode == 0, reordered.stderr[-3000:]
    assert (f"cnnx: {tmp_path / 'sw' / '0' / 'checkpoints'} holds another run's checkpoints (a job numbered "
            f"otherwise in an earlier attempt); this run writes its own beside it, to checkpoints-2") in reordered.stderr
    assert "cnnx: continuing 'epochs=1,lr=0.01'" in reordered.stderr
    client = store_client(tmp_path)
    (parent,), children = sweep_runs(client)
    assert sorted((c.data.params["optimizer.lr"], c.info.status) for c in children) == [
        ("0.01", "FINISHED"), ("0.05", "FINISHED")]
    again = run_cli(["-m", *SMALL, *LEAN, "optimizer.lr=0.01,0.05", sweep_dir, "sweep.resume=true"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("cnnx: skipping") == 2
