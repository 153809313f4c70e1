"""Sweeps on SLURM (``hydra/launcher=submitit_slurm``) through the real CLI, submitit and
Hydra's launcher, on a fake SLURM that runs the jobs on this machine (``fake_slurm``), into a
real sqlite MLflow store."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import pytest
from e2e_helpers import (
    all_runs, assert_complete_sweep, metric_history, run_cli, start_cli, store_client, sweep_runs,
)
from fake_slurm import fake_slurm  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

#: The README's SLURM command, on two CPUs per job
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=cpu", "hydra.launcher.cpus_per_task=2",
         "hydra.launcher.timeout_min=60", "trainer.blas_threads=null"]
LEAN = ["tracking.log_plots=false", "tracking.log_model=false"]


def test_the_readmes_slurm_command_runs_each_job_as_an_array_task(tmp_path, fake_slurm):  # noqa: F811
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["-m", "+experiment=digits_small", "trainer.epochs=1", "optimizer.lr=0.05,0.1", *SLURM,
                      f"hydra.sweep.dir={sweep_dir}"], tmp_path, env=fake_slurm.env, timeout=180)
    _, children = assert_complete_sweep(store_client(tmp_path), result, jobs=2, swept={"optimizer.lr"}, models=True)
    # each job's BLAS uses the cores SLURM gave it
    assert {c.data.tags["cnnx.blas_threads"] for c in children} == {"2"}
    assert sorted(c.data.tags["cnnx.sweep.job"] for c in children) == ["0", "1"]
    # one array of two tasks, with the launcher's settings and submitit's preemption signal
    (submission,) = sweep_dir.glob(".submitit/*/*_submission.sh")
    directives = [line for line in submission.read_text().splitlines() if line.startswith("#SBATCH")]
    assert {"#SBATCH --partition=cpu", "#SBATCH --cpus-per-task=2", "#SBATCH --array=0-1%2"} <= set(directives)
    assert any(line.startswith("#SBATCH --signal=USR2@") for line in directives), directives
    assert [c.split()[0] for c in fake_slurm.commands()].count("sbatch") == 1
    array_id = next(iter(fake_slurm.tasks())).split("_")[0]
    assert f"cnnx: submitted SLURM job {array_id} (2 tasks)" in result.stderr
    # submitit takes a job's result once it is written, before SLURM records the job's end
    assert fake_slurm.wait_until_idle() == []
    assert set(fake_slurm.tasks().values()) == {"COMPLETED"}, fake_slurm.tasks()
    # each job kept its own log in its folder
    for job in ("0", "1"):
        assert "epoch   1/1" in (sweep_dir / job / "app.log").read_text()


def wait_for_line(path: Path, text: str, driver, timeout: float = 120) -> None:
    """Until ``path`` holds ``text``; fails early if the sweep's process ends first."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        if driver.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {driver.returncode}) before {path} said {text!r}: "
                                 f"{driver.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"{path} did not say {text!r} within {timeout} s"
        time.sleep(0.05)


EPOCHS = 4


@pytest.mark.parametrize("preemption", ["requeue", "usr2"])
def test_a_job_requeued_by_slurm_continues_its_own_run_from_its_checkpoint(tmp_path, fake_slurm, preemption):  # noqa: F811
    """``requeue``: SLURM's PreemptMode=REQUEUE. ``usr2``: the signal submitit has SLURM send
    ahead of the time limit (and sends itself to simulate a preemption), on which submitit
    requeues the job: the run was FAILED with ``SystemExit: -1`` and no checkpoint of its own."""
    sweep_dir = tmp_path / "sweep"
    driver = start_cli(["-m", "+experiment=digits_small", f"trainer.epochs={EPOCHS}", "optimizer.lr=0.05,0.1",
                        *LEAN, *SLURM, f"hydra.sweep.dir={sweep_dir}"], tmp_path, env=fake_slurm.env)
    try:
        # job 1 has checkpointed its first epoch and trains its second: SLURM preempts it
        # (PreemptMode=REQUEUE: SIGCONT and SIGTERM to the job, then its batch script runs again)
        app_log = sweep_dir / "1" / "app.log"
        wait_for_line(app_log, "epoch   1/", driver)
        (task,) = [t for t in fake_slurm.tasks() if t.endswith("_1")]
        # an epoch takes a fraction of a second: the job waits stopped for the preemption
        # (whose SIGCONT resumes it), so that it lands inside training on any machine
        fake_slurm.stop_steps(task)
        assert f"epoch {EPOCHS:>3}/{EPOCHS}" not in app_log.read_text(), "job 1 finished training before it was stopped"
        if preemption == "requeue":
            requeue = fake_slurm.run("scontrol", "requeue", task)
            assert requeue.returncode == 0, requeue.stderr
        else:  # delivered once the job runs on, then submitit requeues it from its handler
            for sent in ("USR2", "CONT"):
                assert fake_slurm.run("scancel", "--signal", sent, task).returncode == 0
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, err[-3000:]
    assert "database is locked" not in err

    # SLURM ran the task twice, submitit did not submit it again
    assert (fake_slurm.task(task) / "restarts").read_text().strip() == "1"
    # submitit takes a job's result once it is written, before SLURM records the job's end
    assert fake_slurm.wait_until_idle() == []
    assert set(fake_slurm.tasks().values()) == {"COMPLETED"}, fake_slurm.tasks()
    assert [c.split()[0] for c in fake_slurm.commands()].count("sbatch") == 1
    # the first attempt was stopped while it trained; the second continued its run
    job_err = "".join(p.read_text() for p in sweep_dir.glob(f".submitit/{task}/*_log.err"))
    if preemption == "requeue":
        assert "TrainingInterrupted: SIGTERM received; stopped " in job_err, job_err[-3000:]
    else:  # the batch ended and a checkpoint was saved before submitit requeued the job
        job_out = "".join(p.read_text() for p in sweep_dir.glob(f".submitit/{task}/*_log.out"))
        assert "this job is preempted" in job_err and f"Requeued job {task}" in job_out, job_err[-3000:]
        assert "SystemExit" not in job_err, job_err[-3000:]
    assert "cnnx: job 1 was started again in its folder by the launcher" in job_err, job_err[-3000:]
    continued = re.search(r"cnnx: continuing '.*' \(run (\w+), KILLED\) from its checkpoints in (.*)", job_err)
    assert continued and continued[2] == str(sweep_dir / "1" / "checkpoints"), job_err[-3000:]

    # one parent, FINISHED, over the sweep's two jobs, each with one FINISHED run and no other
    client = store_client(tmp_path)
    (parent,), children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert sorted((c.data.tags["cnnx.sweep.job"], c.info.status) for c in children) == [
        ("0", "FINISHED"), ("1", "FINISHED")], [(c.info.run_name, c.info.status) for c in children]
    assert len(all_runs(tmp_path)) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    (job1,) = [c for c in children if c.data.tags["cnnx.sweep.job"] == "1"]
    assert job1.info.run_id == continued[1]
    assert parent.data.tags["cnnx.sweep.best_run_id"] in {c.info.run_id for c in children}
    table = Path(client.download_artifacts(parent.info.run_id, "comparison.csv"))
    assert sorted(row["status"] for row in csv.DictReader(table.open())) == ["FINISHED", "FINISHED"]
    # the continued run has each epoch once
    for child in children:
        history = metric_history(client, child.info.run_id, "val_acc")
        assert [step for step, _ in history] == list(range(1, EPOCHS + 1)), (child.data.tags["cnnx.sweep.job"], history)


def test_a_sweep_stopped_by_sigterm_cancels_its_slurm_jobs_and_resumes_training_none_twice(tmp_path, fake_slurm):  # noqa: F811
    """Its SLURM jobs trained on after the sweep's process stopped, reporting to a FAILED parent,
    and the resume command it printed trained the pending ones a second time."""
    import signal

    sweep_dir = tmp_path / "sweep"
    args = ["-m", "+experiment=digits_small", f"trainer.epochs={EPOCHS}", "optimizer.lr=0.02,0.05,0.1", *LEAN, *SLURM,
            f"hydra.sweep.dir={sweep_dir}"]
    one_slot = {**fake_slurm.env, "FAKE_SLURM_SLOTS": "1"}  # job 0 trains, jobs 1 and 2 wait in the queue
    driver = start_cli(args, tmp_path, env=one_slot)
    try:
        wait_for_line(sweep_dir / "0" / "app.log", "epoch   1/", driver)
        (task,) = [t for t in fake_slurm.tasks() if t.endswith("_0")]
        fake_slurm.stop_steps(task)  # held inside training until SLURM's SIGCONT and SIGTERM
        driver.send_signal(signal.SIGTERM)  # a closed login session, `timeout`
        _, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 128 + signal.SIGTERM, err[-3000:]
    job_id = task.split("_")[0]
    assert f"cnnx: cancelling the sweep's SLURM job {job_id} (scancel)" in err, err[-3000:]
    assert err.rstrip().splitlines()[-1].startswith("cnnx: sweep interrupted by SIGTERM; continue it with: ")
    # the sweep waited for its jobs: at its exit none is left in the queue (squeue lists a task
    # until its processes have ended), and the training one has saved its checkpoint
    queue = fake_slurm.run("squeue", "-h", "-o", "%i", "-j", job_id)
    assert queue.returncode == 0 and queue.stdout.strip() == "", queue.stdout
    saved = {path.name for path in (sweep_dir / "0" / "checkpoints").glob("epoch-*.npz")}
    assert saved - {"epoch-0001.npz"}, f"no checkpoint of where SIGTERM stopped it: {saved}"
    assert fake_slurm.wait_until_idle(timeout=5) == []
    assert set(fake_slurm.tasks().values()) == {"CANCELLED"}, fake_slurm.tasks()
    client = store_client(tmp_path)
    (parent,), children = sweep_runs(client)
    assert parent.info.status == "FAILED"
    assert [(c.data.tags["cnnx.sweep.job"], c.info.status) for c in children] == [("0", "KILLED")]

    resumed = run_cli([*args, "sweep.resume=true"], tmp_path, env=fake_slurm.env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (parent,), children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert sorted((c.data.tags["cnnx.sweep.job"], c.info.status) for c in children) == [
        ("0", "FINISHED"), ("1", "FINISHED"), ("2", "FINISHED")]
    assert len(all_runs(tmp_path)) == 4  # no job trained twice
    for child in children:
        assert [step for step, _ in metric_history(client, child.info.run_id, "val_acc")] == list(range(1, EPOCHS + 1))
