"""What the CLI tells a user whose run or sweep was interrupted: a command that works.

The end-to-end tests (test_resume.py, test_sweeps_end_to_end.py) send the signals; these pin
down the wording for each case without a subprocess each.
"""

from __future__ import annotations

from cnnx.cli import interrupted_message, sweep_continuation
from cnnx.training.signals import TrainingInterrupted

SWEEP = ["-m", "+experiment=digits_small", "optimizer.lr=0.1,0.2"]


def interruption(checkpoint: str | None, in_sweep: bool, tracked: bool = True) -> TrainingInterrupted:
    error = TrainingInterrupted("SIGTERM", epoch=3, batch=7)
    error.checkpoint, error.run_dir = checkpoint, "multirun/x/1"
    error.in_sweep, error.sweep_tracked = in_sweep, tracked
    return error


def test_a_stopped_sweep_job_with_a_checkpoint_is_said_to_continue_from_it():
    message = interrupted_message(interruption("multirun/x/1/checkpoints/e.npz", in_sweep=True), SWEEP)
    assert message.startswith("sweep interrupted by SIGTERM during epoch 3, batch 7 of job multirun/x/1; ")
    assert "continue it with: python -m cnnx -m +experiment=digits_small optimizer.lr=0.1,0.2 sweep.resume=true" in message
    assert message.endswith("(FINISHED jobs are skipped, stopped ones continue from their last checkpoint)")


def test_a_stopped_sweep_job_without_a_checkpoint_starts_again():
    message = interrupted_message(interruption(None, in_sweep=True), SWEEP)
    assert message.endswith("(FINISHED jobs are skipped, this one starts again)")


def test_an_untracked_sweep_can_only_be_run_again_and_is_not_offered_sweep_resume():
    # sweep.resume=true is refused without tracking: offering it would send the user to an error
    message = interrupted_message(interruption("c.npz", in_sweep=True, tracked=False), [*SWEEP, "tracking=none"])
    assert "sweep.resume" not in message
    assert "run it again with: python -m cnnx -m +experiment=digits_small optimizer.lr=0.1,0.2 tracking=none" in message
    assert "every job runs again" in message
    assert "sweep.resume" not in sweep_continuation([*SWEEP, "sweep.resume=true"], tracked=False)


def test_an_untracked_sweep_is_run_again_in_a_new_directory():
    # Its own still holds the stopped jobs' checkpoints: a new sweep there is refused.
    message = sweep_continuation([*SWEEP, "hydra.sweep.dir=sweeps/lr", "tracking=none"], tracked=False)
    assert message == ("run it again with: python -m cnnx -m +experiment=digits_small optimizer.lr=0.1,0.2 "
                       "tracking=none (tracking is off, so nothing records which jobs finished: every job runs "
                       "again, in a new sweep directory)")


def test_a_sweep_job_interrupted_in_a_parallel_worker_reaches_the_sweep_intact():
    import pickle

    sent = interruption("c.npz", in_sweep=True)
    received = pickle.loads(pickle.dumps(sent))
    assert isinstance(received, TrainingInterrupted)
    assert vars(received) == vars(sent) and str(received) == str(sent)


def test_a_parallel_sweep_says_its_stopped_jobs_continue():
    assert sweep_continuation(SWEEP, tracked=True).endswith(
        "sweep.resume=true (FINISHED jobs are skipped, stopped ones continue from their last checkpoint)")


def test_a_single_run_is_resumed_from_its_own_checkpoint():
    message = interrupted_message(interruption("runs/a/checkpoints/e.npz", in_sweep=False), ["+experiment=lenet"])
    assert message == ("interrupted by SIGTERM during epoch 3, batch 7; checkpoint saved to runs/a/checkpoints/e.npz; "
                       "resume with: python -m cnnx +experiment=lenet trainer.resume=true hydra.run.dir=multirun/x/1")


def test_a_run_without_checkpoints_says_that_they_are_off():
    error = interruption(None, in_sweep=False)
    assert interrupted_message(error, []) == "interrupted by SIGTERM during epoch 3, batch 7; no checkpoint was written"
    error.checkpoints_off = True
    assert interrupted_message(error, []).endswith(
        "no checkpoint was written (checkpoints are off: trainer.checkpoint.enabled=false)")


def test_a_parallel_sweep_without_checkpoints_says_its_stopped_jobs_start_again():
    from omegaconf import OmegaConf

    from cnnx.sweep_settings import CheckSweepSettings, sweep_is_checkpointed, sweep_is_tracked

    for enabled in (False, True):
        config = OmegaConf.create({"tracking": {"enabled": True}, "trainer": {"checkpoint": {"enabled": enabled}},
                                   "hydra": {"overrides": {"task": []}}})
        CheckSweepSettings().on_multirun_start(config)
        assert (sweep_is_tracked(), sweep_is_checkpointed()) == (True, enabled)
    stopped = "stopped ones start again: checkpoints are off"
    assert sweep_continuation(SWEEP, tracked=True, stopped_jobs=stopped).endswith(
        f"(FINISHED jobs are skipped, {stopped})")


INTERRUPTED_TOOL = """
import os, signal, sys, time
import cnnx.plugins

def interrupted(check=False):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the terminal sends it, in the middle of the work
    time.sleep(10)

cnnx.plugins.format_table = interrupted
from cnnx.cli import main
sys.exit(main(["plugins"]))
"""


def test_ctrl_c_in_a_command_is_one_line_and_exit_130():
    """predict, compare, plugins and the outbox replay showed a KeyboardInterrupt traceback."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", INTERRUPTED_TOOL], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr, result.stdout) == (130, "cnnx: interrupted\n", "")
