"""The git tags a run records (``cnnx.tracking.tags``), where git is missing or unusual."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from e2e_helpers import git_work_tree

from cnnx.tracking.tags import GIT_DIRTY_TAG, git_tags, run_tags


def _fresh(folder: Path) -> dict[str, str]:
    git_tags.cache_clear()
    return git_tags(str(folder))


def test_outside_a_work_tree_or_without_git_a_run_has_no_git_tags_and_no_delay(tmp_path, monkeypatch):
    started = time.perf_counter()
    tags = run_tags(tmp_path)
    assert not [k for k in tags if ".git" in k] and tags["mlflow.source.name"] == "cnnx" and tags["mlflow.user"]
    git_work_tree(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # git is not installed
    assert _fresh(tmp_path) == {}
    assert time.perf_counter() - started < 0.5


def test_a_work_tree_without_commits_or_on_a_detached_head(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert _fresh(tmp_path) == {}
    commit = git_work_tree(tmp_path)
    subprocess.run(["git", "checkout", "-q", "--detach"], cwd=tmp_path, check=True)
    (tmp_path / "untracked.txt").write_text("outputs, mlflow.db: not the code")
    (tmp_path / "deeper").mkdir()
    assert _fresh(tmp_path / "deeper") == {"mlflow.source.git.commit": commit, GIT_DIRTY_TAG: "false"}
