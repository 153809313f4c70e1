"""The check of a local MLflow store that runs before anything is trained
(``cnnx.tracking.background._check_local_store``)."""

from __future__ import annotations

import pytest

from cnnx.tracking.background import _check_local_store
from cnnx.tracking.mlflow_tracker import TrackingError


def test_a_folder_store_is_checked_without_making_the_folder(tmp_path):
    store = tmp_path / "runs.db"
    _check_local_store(str(store))
    # MLflow refuses folder stores and the error suggests sqlite:///…/runs.db: an empty folder
    # left there would keep sqlite from creating that file.
    assert not store.exists()
    _check_local_store(f"sqlite:///{store}")


def test_a_sqlite_store_gets_its_folders(tmp_path):
    _check_local_store(f"sqlite:///{tmp_path}/a/b/runs.db")
    assert (tmp_path / "a" / "b").is_dir()


def test_a_folder_store_where_no_file_can_be_made_is_refused():
    with pytest.raises(TrackingError, match="cannot create files in '/proc'"):
        _check_local_store("/proc/runs")
