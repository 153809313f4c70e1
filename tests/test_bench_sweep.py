"""``python -m cnnx.bench_sweep`` through its real command line: both sweeps run and are reported.

How fast either sweep runs is the benchmark's business; here only that it runs the jobs it
says, reports a speed-up consistent with its wall times, and names bad input on one line.
"""

import re
import subprocess
import sys

import pytest


def run_bench_sweep(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnx.bench_sweep", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def consistent_ratio(printed: float, numerator: float, denominator: float) -> bool:
    """Whether a ratio printed to 0.01 can come from two times printed to 0.1 s: with a
    1-second span, rounding alone moves the ratio by several hundredths."""
    low = (numerator - 0.05) / (denominator + 0.05)
    high = (numerator + 0.05) / max(denominator - 0.05, 1e-9)
    return low - 0.005 <= printed <= high + 0.005


@pytest.mark.slow
def test_times_the_sweep_sequentially_and_with_joblib(tmp_path):
    result = run_bench_sweep("--epochs", "1", "--sweep", "optimizer.lr=0.1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    walls, spans = {}, {}
    lines = result.stdout.splitlines()
    for name in ("sequential (basic launcher)", "joblib, 2 workers"):
        number = next(n for n, line in enumerate(lines) if line.startswith(name + ":"))
        wall, cpu, jobs = re.search(r"([\d.]+) s wall, +([\d.]+) s CPU, (\d+) jobs", lines[number]).groups()
        assert int(jobs) == 1 and float(cpu) > 0, lines[number]
        walls[name] = float(wall)
        parts = re.search(r"([\d.]+) s before the first job, ([\d.]+) s from its start to the last "
                          r"job's end, ([\d.]+) s after$", lines[number + 1])
        before, span, after = map(float, parts.groups())
        # The three parts are the wall time, and start-up alone takes a second or more.
        assert before + span + after == pytest.approx(float(wall), abs=0.15) and before > 1, lines[number + 1]
        spans[name] = span
    speedup, jobs_alone = map(float, re.search(r"^speed-up: ([\d.]+)x \(jobs alone: ([\d.]+)x\)$",
                                               result.stdout, re.MULTILINE).groups())
    assert consistent_ratio(speedup, walls["sequential (basic launcher)"], walls["joblib, 2 workers"]), result.stdout
    assert consistent_ratio(jobs_alone, spans["sequential (basic launcher)"], spans["joblib, 2 workers"]), result.stdout
    assert list(tmp_path.iterdir()) == [], "the sweeps' stores and outputs belong in a temporary directory"


def test_a_failing_sweep_reports_the_clis_error_on_one_line(tmp_path):
    result = run_bench_sweep("--epochs", "1", "--sweep", "optimizer.lrr=0.02,0.1", cwd=tmp_path)
    assert result.returncode == 1
    message = result.stderr.strip()
    assert "\n" not in message and message.startswith("python -m cnnx.bench_sweep: the sweep failed"), message
    assert "optimizer.lrr" in message


@pytest.mark.parametrize("option", ["--epochs", "--workers", "--repeat"])
def test_bad_option_is_named(option, tmp_path):
    result = run_bench_sweep(option, "0", cwd=tmp_path)
    assert result.returncode == 2
    assert f"{option} must be at least 1, got 0" in result.stderr.splitlines()[-1]
