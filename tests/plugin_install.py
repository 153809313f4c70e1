"""Install plugin distributions with pip, as their users do, from a clean copy of the source.

Copying first keeps setuptools' ``build/`` and ``*.egg-info`` out of the source tree (a stale
``build/lib`` would also put deleted modules back into the wheel). ``--no-build-isolation``
builds with the environment's setuptools and wheel (the ``test`` extra installs them), which
is several times faster than pip creating an isolated build environment per distribution;
``--no-deps`` because cnnx, the environment under test, is already there.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())


def pip_install(sources: list[Path], scratch: Path, *pip_options: str) -> None:
    copies = []
    for source in sources:
        copy = scratch / source.name
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        copies.append(str(copy))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-input", "--disable-pip-version-check", *pip_options, *copies],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"pip could not install {', '.join(s.name for s in sources)}:\n{result.stderr}")
    importlib.invalidate_caches()
