"""cnnx and the distributions in plugins/ build without setuptools warnings: pip shows a
build's warnings at install, so each would be a screenful in the Quickstart's and the test
command's output (a config-group folder the packages leave out, a deprecated license table)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = [ROOT] + sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
# what a working checkout holds beside the sources: none of it goes into a wheel
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                     "tests", "plugins", "docs", "outputs", "multirun", "mlruns", "*.db")


@pytest.mark.slow  # a pip wheel build, a few seconds each
@pytest.mark.parametrize("source", DISTRIBUTIONS, ids=lambda p: p.name if p != ROOT else "cnnx")
def test_wheel_builds_without_setuptools_warnings(source, tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(source, copy, symlinks=True, ignore=NOT_SOURCES)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(copy)],
        capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output, output
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # the config groups still ship: the folders the warnings were about
    assert [n for n in names if n.endswith(".yaml") and "/conf/" in n], names
    if source == ROOT:
        assert "cnnx/conf/trainer/default.yaml" in names and "cnnx/conf/experiment/lenet.yaml" in names
