"""Sweep benchmark: ``python -m cnnx.bench_sweep``.

Times the same 8-job ``digits_small`` sweep twice through the real CLI, each into its own
fresh sqlite store: once with Hydra's basic launcher (jobs one after another) and once with
the joblib launcher (``--workers`` jobs side by side, each job's BLAS given its share of the
cores). Prints both wall times and the speed-up; the load average shows how busy the machine
was, since other processes take cores from either run. ``--repeat N`` runs N such pairs and
reports the median speed-up: on a shared host one pair can be off by a third either way.
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
from pathlib import Path

SWEEP = ["optimizer.lr=0.02,0.1", "model.layers.conv1.out_channels=4,8", "trainer.batch_size=32,64"]


def time_sweep(workdir: Path, epochs: int | None, launcher: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all processes of the sweep) of one sweep."""
    workdir.mkdir(parents=True)
    command = [sys.executable, "-m", "cnnx", "-m", "+experiment=digits_small",
               *([f"trainer.epochs={epochs}"] if epochs else []), *SWEEP, *launcher, f"hydra.sweep.dir={workdir / 'sweep'}"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    cpu_before = _children_cpu()
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    cpu = _children_cpu() - cpu_before
    if result.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    return elapsed, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="epochs per job (default: the preset's 20)")
    parser.add_argument("--workers", type=int, default=2, help="joblib workers (default 2)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pairs of sweeps, alternating sequential and joblib; the median speed-up is reported")
    args = parser.parse_args(argv)

    epochs = args.epochs or "the preset's 20"
    print(f"8-job digits_small sweep, {epochs} epochs per job, {os.cpu_count()} cores")
    launchers = {"sequential (basic launcher)": [],
                 f"joblib, {args.workers} workers": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"]}
    speedups = []
    with tempfile.TemporaryDirectory(prefix="cnnx-bench-sweep-") as tmp:
        for pair in range(args.repeat):
            walls = []
            for number, (name, launcher) in enumerate(launchers.items()):
                load = os.getloadavg()[0]
                wall, cpu = time_sweep(Path(tmp) / f"{pair}-{number}", args.epochs, launcher)
                walls.append(wall)
                print(f"{name + ':':30s} {wall:7.1f} s wall, {cpu:6.1f} s CPU (load average before: {load:.2f})")
            speedups.append(walls[0] / walls[1])
            print(f"speed-up: {speedups[-1]:.2f}x")
    if args.repeat > 1:
        print(f"median speed-up over {args.repeat} pairs: {statistics.median(speedups):.2f}x "
              f"(min {min(speedups):.2f}, max {max(speedups):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
