"""The ``fake_slurm`` fixture: a fake SLURM (``fakeslurm.py`` beside this file) that really runs
its jobs on this machine, for the CLI's ``hydra/launcher=submitit_slurm`` sweeps.

A test passes ``fake_slurm.env`` to the CLI it starts: the fake's commands first on PATH, and
a state folder of the test's own. Every process the fake starts (runners, batch scripts, the
jobs) inherits that state folder in its environment, which is how the fixture finds them: at
teardown it cancels every job left and kills whatever of them outlives a grace period, and the
test fails if anything had to be killed or cannot be.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

FAKE = Path(__file__).resolve().with_name("fakeslurm.py")
COMMANDS = ("sbatch", "srun", "sacct", "scancel", "scontrol", "squeue")
#: SLURM's KillWait (SIGTERM to SIGKILL) on the fake: enough for a job to save its checkpoint.
KILL_WAIT = 10


@dataclass
class FakeSlurm:
    bin: Path
    state: Path

    @property
    def env(self) -> dict[str, str]:
        """What the CLI's environment needs on top of the test's own."""
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", "FAKE_SLURM_STATE": str(self.state),
                "FAKE_SLURM_SLOTS": "2", "FAKE_SLURM_KILL_WAIT": str(KILL_WAIT)}

    def run(self, command: str, *args: str) -> subprocess.CompletedProcess:
        """One of the fake's commands, as the CLI's jobs would call it (``scontrol requeue ID``)."""
        return subprocess.run([str(self.bin / command), *args], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=30)

    def stop_steps(self, task_id: str) -> None:
        """SIGSTOP a running task's job steps (its srun'd processes), where they are: SLURM's
        SIGCONT, which comes with each SIGTERM it sends, resumes them."""
        steps = (self.task(task_id) / "step_pids").read_text().split()
        assert steps, f"task {task_id} has no job step yet"
        for pid in steps:
            os.kill(int(pid), signal.SIGSTOP)

    def tasks(self) -> dict[str, str]:
        """Every task submitted, by its id (``1000_1``), with its state."""
        folder = self.state / "jobs"
        return {d.name: (d / "state").read_text().strip() for d in sorted(folder.iterdir())} if folder.exists() else {}

    def task(self, task_id: str) -> Path:
        """A task's state folder (``events``, ``restarts``, ``submit.json``...)."""
        return self.state / "jobs" / task_id

    def commands(self) -> list[str]:
        """Every call of the fake's commands, in order (``sbatch /path/to/file.sh``)."""
        log = self.state / "commands.log"
        return [line.split(" ", 2)[2] for line in log.read_text().splitlines()] if log.exists() else []

    def processes(self) -> list[dict]:
        """The live processes started by this fake: its runners, the jobs' scripts and steps."""
        return processes_with_env("FAKE_SLURM_STATE", str(self.state), exclude={os.getpid()})

    def wait_until_idle(self, timeout: float = 20) -> list[dict]:
        """Until no process of this fake is left; returns those still there after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


def processes_with_env(name: str, value: str, exclude: set[int]) -> list[dict]:
    """Live (not zombie) processes whose environment holds ``name=value``."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
            environ = Path("/proc", entry, "environ").read_bytes().split(b"\0")
            command = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile, or not ours to read
            continue
        if wanted in environ and stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            found.append({"pid": int(entry), "command": command.strip()})
    return found


def write_wrappers(folder: Path) -> None:
    """One script per command that runs the fake with this interpreter (isolated, no site: the
    fake is standard library only, and submitit calls sacct often)."""
    folder.mkdir(parents=True)
    for command in COMMANDS:
        wrapper = folder / command
        fake = f"{shlex.quote(sys.executable)} -I -S {shlex.quote(str(FAKE))}"
        wrapper.write_text(f'#!/bin/sh\nexec {fake} {command} "$@"\n')
        wrapper.chmod(0o755)


@pytest.fixture
def fake_slurm(tmp_path):
    if not Path("/proc/self/environ").exists():
        pytest.skip("the fake SLURM finds its processes in /proc (Linux)")
    slurm = FakeSlurm(bin=tmp_path / "fake-slurm-bin", state=tmp_path / "fake-slurm-state")
    write_wrappers(slurm.bin)
    yield slurm
    # teardown: cancel what is left (its runners stop the jobs: SIGTERM, SIGKILL after KILL_WAIT)
    left = [task for task, state in slurm.tasks().items() if state in ("PENDING", "RUNNING", "REQUEUED")]
    if left:
        slurm.run("scancel", *left)
    stragglers = slurm.wait_until_idle(timeout=KILL_WAIT + 10 if left else 10)
    for process in stragglers:
        try:
            os.kill(process["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    survivors = slurm.wait_until_idle(timeout=5)
    report = {"tasks": slurm.tasks(), "cancelled at teardown": left,
              "killed at teardown": [p["command"] for p in stragglers],
              "not killed": [p["command"] for p in survivors]}
    if stragglers or survivors:
        pytest.fail(f"the fake SLURM's processes outlived the test: {json.dumps(report, indent=1)}", pytrace=False)
