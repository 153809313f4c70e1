"""``python -m cnnx.bench`` through its real command line: figures printed, torch optional.

Only the output is checked here — how fast anything runs is the benchmark's business.
"""

import importlib.util
import subprocess
import sys

import pytest

QUICK = ["--steps", "2", "--warmup", "1"]


def run_bench(*args: str, hide_torch: bool = False) -> subprocess.CompletedProcess:
    # sys.modules["torch"] = None makes "import torch" fail as on a machine without torch.
    code = ("import sys\n" + ("sys.modules['torch'] = None\n" if hide_torch else "")
            + "from cnnx.bench import main\nmain(sys.argv[1:])")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def figures(stdout: str) -> dict[str, list[float]]:
    """The numbers of each workload's row, by workload name."""
    rows = {}
    for line in stdout.splitlines():
        name, *values = line.split() or [""]
        if name in ("lenet5", "digits"):
            rows[name] = [float(v) for v in values]
    return rows


def test_without_torch_prints_the_engines_figures():
    result = run_bench(*QUICK, hide_torch=True)
    assert result.returncode == 0, result.stderr
    assert "torch is not installed: timing the engine only" in result.stdout
    assert "warm-up steps, engine only" in result.stdout and "interleaved" not in result.stdout
    rows = figures(result.stdout)
    assert set(rows) == {"lenet5", "digits"}
    for name, (ms, samples_per_second) in rows.items():
        assert ms > 0 and samples_per_second == pytest.approx(64 / ms * 1e3, rel=0.01), name


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch, which cnnx never installs")
@pytest.mark.parametrize("order", ["interleaved", "separate"])
def test_with_torch_prints_the_ratio(order):
    result = run_bench(*QUICK, "--workload", "digits", *(["--separate"] if order == "separate" else []))
    assert result.returncode == 0, result.stderr
    assert ("each library on its own" if order == "separate" else "interleaved") in result.stdout
    engine_ms, _, torch_ms, _, ratio = figures(result.stdout)["digits"]
    # Printed to 3 decimals (ms) and 2 (ratio): the ratio of the printed ms may differ by
    # the rounding of each, which grows as the steps get shorter.
    rounding = 0.005 + 0.0005 * (1 / torch_ms + (engine_ms + 0.0005) / (torch_ms - 0.0005) ** 2) + 1e-9
    assert ratio == pytest.approx(engine_ms / torch_ms, abs=rounding)


def test_no_torch_flag_times_the_engine_alone():
    result = run_bench(*QUICK, "--workload", "lenet5", "--no-torch")
    assert result.returncode == 0, result.stderr
    assert list(figures(result.stdout)) == ["lenet5"] and len(figures(result.stdout)["lenet5"]) == 2
    assert "warm-up steps, engine only" in result.stdout


@pytest.mark.parametrize("option, value", [("--steps", "0"), ("--warmup", "-1"), ("--batch-size", "0"),
                                           ("--threads", "0")])
def test_bad_option_is_named_on_one_line(option, value):
    result = run_bench(option, value, "--no-torch")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(f"error: {option} must be at least {1 if option != '--warmup' else 0}, got {value}")
