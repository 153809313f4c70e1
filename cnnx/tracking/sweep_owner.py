"""Whether the process that drives a sweep still does, so that ``sweep.resume=true`` does not
train its jobs a second time, into the same runs, beside it (a sweep thought dead, resubmitted).

A RUNNING parent is either a sweep still going or one killed outright (SIGKILL, the OOM killer,
a crashed node) that never got to end its runs, and those must stay resumable. The parent
records the host, PID and start time of the process driving it (the start time, because a
later process may be given the same PID); on that host, the process tells the two apart. From
another host nothing can be checked: there the sweep counts as running while one of its
RUNNING jobs has been active lately, within twice its usual epoch time and at least
``QUIET_SECONDS`` (a job writes a metric per epoch; one that was killed stops writing).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import time
from pathlib import Path

HOST_TAG = "cnnx.sweep.host"
PID_TAG = "cnnx.sweep.pid"
PROCESS_STARTED_TAG = "cnnx.sweep.process_started"
#: The least time a job on another host must have been silent to count as stopped.
QUIET_SECONDS = 300
#: Logged at every epoch's end by every run, with or without a validation split.
_EPOCH_METRIC = "train_loss"


def driver_tags() -> dict[str, str]:
    """This process as the driver of a sweep, for its parent run."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    started = process_started(os.getpid())
    if started is not None:
        tags[PROCESS_STARTED_TAG] = started
    return tags


def process_started(pid: int) -> str | None:
    """When process ``pid`` of this host started, as a token that no later process given the
    same PID shares; None if there is no such process, or this platform cannot tell."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot = ""
        # Field 22: clock ticks from boot to the start. The command name before it is in
        # parentheses and may hold spaces and parentheses itself.
        return f"{boot}:{stat.rpartition(')')[2].split()[19]}"
    try:
        ps = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return ps.stdout.strip() or None


def still_running(client, parent) -> str | None:
    """Why the sweep of ``parent`` must not be resumed yet because it still runs, in one line;
    None if it does not."""
    if parent.info.status != "RUNNING":
        return None
    tags = parent.data.tags
    host, pid, started = tags.get(HOST_TAG), tags.get(PID_TAG), tags.get(PROCESS_STARTED_TAG)
    sweep = f"sweep {parent.info.run_name!r} (parent run {parent.info.run_id})"
    if host == socket.gethostname() and pid and started:
        if process_started(int(pid)) != started:
            return None
        return (f"sweep.resume=true: {sweep} is still running, in process {pid} on this host ({host}); "
                f"wait for it to end, or stop it first (Ctrl-C in its terminal, or kill {pid}), then resume it")
    active = _active_job(client, parent)
    if active is None:
        return None
    job, idle, wait = active
    driver = (f"in process {pid} on host {host}" if host and pid else
              "by a cnnx that did not record its process")
    return (f"sweep.resume=true: {sweep} may still be running: it was started {driver}, which this host "
            f"cannot check, and its job {job.info.run_name!r} was active {_duration(idle)} ago; wait for it "
            f"to end, or stop it where it runs first; if it is gone, resume it in {_duration(wait)}")


def _active_job(client, parent):
    """The RUNNING child of ``parent`` that would have to stay silent longest to count as
    stopped, with how long it has been silent and that time left; None when every one counts
    as stopped already."""
    children = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and attributes.status = 'RUNNING'", max_results=1000)
    now = time.time()
    found = None
    for run in children:
        started = run.info.start_time / 1000
        ends = sorted({m.step: m.timestamp / 1000 for m in client.get_metric_history(run.info.run_id, _EPOCH_METRIC)}
                      .values())
        # The median step between epoch ends: a run resumed days later has one long gap.
        epoch = statistics.median([b - a for a, b in zip([started, *ends], ends)]) if ends else 0.0
        idle = now - max([started, *ends])
        wait = max(QUIET_SECONDS, 2 * epoch) - idle
        if wait > 0 and (found is None or wait > found[2]):
            found = (run, idle, wait)
    return found


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 120 else f"{round(seconds / 60)} min"
