from __future__ import annotations

import functools
import getpass
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

import cnnx
from cnnx.registry import plugin_distributions

#: A run's code is its commit plus whatever of the tracked files differs from it: "true" then.
GIT_DIRTY_TAG = "cnnx.source.git.dirty"
#: Seconds ``git status`` may take (a huge work tree); after that the run goes without git tags.
_GIT_TIMEOUT = 10.0


def run_tags(cwd: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """What produced a run: who ran it, the git commit of the working directory ``cwd`` (the
    process's by default), versions of cnnx, its plugins and the numerics underneath."""
    plugins = ", ".join(f"{d} {v}" for d, v in sorted(plugin_distributions().items()))
    return {
        **source_tags(str(Path(cwd or os.getcwd()).resolve())),
        "cnnx.version": cnnx.__version__,
        "cnnx.plugins": plugins,
        "numpy.version": np.__version__,
        "python.version": platform.python_version(),
    }


def source_tags(cwd: str) -> dict[str, str]:
    """MLflow's own context tags (``mlflow.user``, ``mlflow.source.*``), which the client API's
    ``create_run`` leaves out; computed here without importing MLflow or GitPython."""
    return {
        "mlflow.user": os.environ.get("MLFLOW_TRACKING_USERNAME") or _user(),
        "mlflow.source.name": "cnnx",
        "mlflow.source.type": "LOCAL",
        **git_tags(cwd),
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 — no login name (a container's bare uid): as MLflow says it
        return "unknown"


@functools.lru_cache(maxsize=8)
def git_tags(cwd: str) -> dict[str, str]:
    """The commit and branch checked out in the git work tree holding ``cwd``, and whether its
    tracked files differ from the commit; nothing outside a work tree or without git.

    Cached: a sequential sweep's jobs run the code its process started with."""
    folder = Path(cwd)
    if not any((parent / ".git").exists() for parent in (folder, *folder.parents)):
        return {}  # not a work tree: no process started
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=folder, capture_output=True, text=True, timeout=_GIT_TIMEOUT,
            # No index refresh written: parallel jobs must not contend for index.lock.
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):  # no git, or a work tree too slow to read
        return {}
    if status.returncode != 0:  # a .git git does not accept (foreign owner, broken)
        return {}
    headers = dict(line[2:].partition(" ")[::2] for line in status.stdout.splitlines() if line.startswith("# "))
    commit, branch = headers.get("branch.oid", ""), headers.get("branch.head", "")
    if len(commit) < 40:  # "(initial)": a repository without commits
        return {}
    tags = {"mlflow.source.git.commit": commit,
            GIT_DIRTY_TAG: str(any(not line.startswith("#") for line in status.stdout.splitlines())).lower()}
    if branch and branch != "(detached)":
        tags["mlflow.source.git.branch"] = branch
    return tags
