"""Sweep benchmark: ``python -m cnnx.bench_sweep``.

Times the same 8-job ``digits_small`` sweep twice through the real CLI, each into its own
fresh sqlite store: once with Hydra's basic launcher (jobs one after another) and once with
the joblib launcher (``--workers`` jobs side by side, each job's BLAS given its share of the
cores). Prints both wall times and the speed-up; the load average shows how busy the machine
was, since other processes take cores from either run. ``--repeat N`` runs N such pairs and
reports the median speed-up: on a shared host one pair can be off by a third either way.
``--sweep OVERRIDE`` (repeatable) times another sweep of the same preset instead.

Each sweep's wall time is also split in three, from its job directories' files: before the
first job starts (start-up, the MLflow parent run, Hydra composing every job's config), from
then until the last job ends, and after (the sweep's summary). Only the middle part runs in
parallel, so its speed-up ("jobs alone") is the launcher's own, and the gap between the two
figures is what the serial parts cost. (The sequential sweep's first job also imports what the
joblib sweep's forked workers inherit, so the jobs' speed-up can exceed the worker count.)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SWEEP = ["optimizer.lr=0.02,0.1", "model.layers.conv1.out_channels=4,8", "trainer.batch_size=32,64"]


@dataclass
class SweepTiming:
    wall: float
    cpu: float  # all processes of the sweep
    jobs: int
    before_jobs: float
    jobs_span: float  # the first job's start to the last job's end
    after_jobs: float


def time_sweep(workdir: Path, epochs: int | None, sweep: list[str], launcher: list[str]) -> SweepTiming:
    workdir.mkdir(parents=True)
    command = [sys.executable, "-m", "cnnx", "-m", "+experiment=digits_small",
               *([f"trainer.epochs={epochs}"] if epochs else []), *sweep, *launcher, f"hydra.sweep.dir={workdir / 'sweep'}"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    cpu_before = _children_cpu()
    started = time.time()  # the clock of file modification times
    result = subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True)
    ended = time.time()
    cpu = _children_cpu() - cpu_before
    if result.returncode != 0:
        # The CLI's own error is its last line: a config mistake reads as it would by hand.
        reason = next((line for line in reversed(result.stderr.splitlines()) if line.strip()), "no error output")
        raise SystemExit(f"python -m cnnx.bench_sweep: the sweep failed (exit {result.returncode}): {reason.strip()}")
    # Hydra gives every job of a multirun its own numbered directory; it writes the job's
    # .hydra/ files as the job starts, and the job's log takes its last line as it ends.
    job_dirs = [job_dir for job_dir in (workdir / "sweep").iterdir() if job_dir.name.isdigit()]
    first_start = min((d / ".hydra" / "config.yaml").stat().st_mtime for d in job_dirs)
    last_end = max((d / "app.log").stat().st_mtime for d in job_dirs)
    return SweepTiming(ended - started, cpu, len(job_dirs), first_start - started, last_end - first_start,
                       ended - last_end)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnx.bench_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="epochs per job (default: the preset's 20)")
    parser.add_argument("--workers", type=int, default=2, help="joblib workers (default 2)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pairs of sweeps, alternating sequential and joblib; the median speed-up is reported")
    parser.add_argument("--sweep", action="append", metavar="OVERRIDE",
                        help=f"a sweep override of the digits_small preset, repeatable (default: {' '.join(SWEEP)})")
    args = parser.parse_args(argv)
    for option, value in (("--epochs", args.epochs), ("--workers", args.workers), ("--repeat", args.repeat)):
        if value is not None and value < 1:
            parser.error(f"{option} must be at least 1, got {value}")
    sweep = args.sweep or SWEEP

    epochs = args.epochs or "the preset's 20"
    print(f"digits_small sweep {' '.join(sweep)}, {epochs} epochs per job, {os.cpu_count()} cores")
    launchers = {"sequential (basic launcher)": [],
                 f"joblib, {args.workers} workers": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"]}
    speedups, job_speedups = [], []
    with tempfile.TemporaryDirectory(prefix="cnnx-bench-sweep-") as tmp:
        for pair in range(args.repeat):
            timings = []
            for number, (name, launcher) in enumerate(launchers.items()):
                load = os.getloadavg()[0]
                timing = time_sweep(Path(tmp) / f"{pair}-{number}", args.epochs, sweep, launcher)
                timings.append(timing)
                print(f"{name + ':':30s} {timing.wall:7.1f} s wall, {timing.cpu:6.1f} s CPU, {timing.jobs} jobs "
                      f"(load average before: {load:.2f})")
                print(f"{'':30s} {timing.before_jobs:7.1f} s before the first job, {timing.jobs_span:.1f} s "
                      f"from its start to the last job's end, {timing.after_jobs:.1f} s after")
            sequential, parallel = timings
            speedups.append(sequential.wall / parallel.wall)
            job_speedups.append(sequential.jobs_span / parallel.jobs_span)
            print(f"speed-up: {speedups[-1]:.2f}x (jobs alone: {job_speedups[-1]:.2f}x)")
    if args.repeat > 1:
        print(f"median speed-up over {args.repeat} pairs: {statistics.median(speedups):.2f}x "
              f"(min {min(speedups):.2f}, max {max(speedups):.2f}; "
              f"jobs alone: median {statistics.median(job_speedups):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
