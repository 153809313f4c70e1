"""Sweep benchmark: ``python -m cnnx.bench_sweep``.

Times the same 8-job ``digits_small`` sweep twice through the real CLI, each into its own
fresh sqlite store: once with Hydra's basic launcher (jobs one after another) and once with
the joblib launcher (``--workers`` jobs side by side, each job's BLAS given its share of the
cores). Prints both wall times and the speed-up; the load average shows how busy the machine
was, since other processes take cores from either run.
"""

from __future__ import annotations

import argparse
import os
import resource
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
    args = parser.parse_args(argv)

    epochs = args.epochs or "the preset's 20"
    print(f"8-job digits_small sweep, {epochs} epochs per job, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="cnnx-bench-sweep-") as tmp:
        load = os.getloadavg()[0]
        sequential, cpu = time_sweep(Path(tmp) / "sequential", args.epochs, [])
        print(f"sequential (basic launcher): {sequential:7.1f} s wall, {cpu:6.1f} s CPU "
              f"(load average before: {load:.2f})")
        load = os.getloadavg()[0]
        parallel, cpu = time_sweep(Path(tmp) / "joblib", args.epochs,
                                   ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"])
        print(f"joblib, {args.workers} workers:           {parallel:7.1f} s wall, {cpu:6.1f} s CPU "
              f"(load average before: {load:.2f})")
    print(f"speed-up: {sequential / parallel:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
