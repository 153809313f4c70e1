"""The check of a local MLflow store that runs before anything is trained
(``cnnx.tracking.store_check.check_local_store``)."""

from __future__ import annotations

import pytest

from cnnx.tracking.mlflow_tracker import TrackingError
from cnnx.tracking.store_check import check_local_store


def test_a_folder_store_is_checked_without_making_the_folder(tmp_path):
    store = tmp_path / "runs.db"
    check_local_store(str(store))
    # MLflow refuses folder stores and the error suggests sqlite:///…/runs.db: an empty folder
    # left there would keep sqlite from creating that file.
    assert not store.exists()
    check_local_store(f"sqlite:///{store}")


def test_a_sqlite_store_gets_its_folders(tmp_path):
    check_local_store(f"sqlite:///{tmp_path}/a/b/runs.db")
    assert (tmp_path / "a" / "b").is_dir()


def test_a_folder_store_where_no_file_can_be_made_is_refused():
    with pytest.raises(TrackingError, match="cannot create files in '/proc'"):
        check_local_store("/proc/runs")


def test_a_long_store_error_is_cut_at_a_word_boundary():
    from cnnx.tracking.mlflow_tracker import shortened

    text = "Detected out-of-date database schema. " + "Take a backup of your database first. " * 10
    cut = shortened(text)
    assert len(cut) <= 302 and cut.endswith(" …") and text.startswith(cut[:-2]) and text[len(cut) - 2] == " "
    assert shortened("short") == "short"


def test_a_percent_encoded_store_path_is_checked_where_mlflow_opens_it(tmp_path):
    """SQLAlchemy decodes a%20b to "a b": the check looked at a%20b/, made that folder, passed,
    and the run trained to its end before MLflow found "a b/mlflow.db" was no database."""
    (tmp_path / "a b").mkdir()
    (tmp_path / "a b" / "mlflow.db").write_text("not a database, but a note")
    with pytest.raises(TrackingError, match="is not an SQLite database"):
        check_local_store(f"sqlite:///{tmp_path}/a%20b/mlflow.db")
    assert not (tmp_path / "a%20b").exists()


def test_an_existing_folder_given_as_a_store_is_told_of_a_database_inside_it(tmp_path):
    """An old mlruns/ given as the store was told to use sqlite:///…/mlruns, which names the
    folder again and is refused next."""
    from cnnx.tracking.mlflow_tracker import unusable_store

    (tmp_path / "mlruns").mkdir()
    refusal = Exception("... set MLFLOW_ALLOW_FILE_STORE=true to use it ...")
    message = str(unusable_store(str(tmp_path / "mlruns"), refusal, "tracking.uri"))
    assert f"accepted: sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'} (a database file)" in message


def test_a_store_uri_made_absolute_names_the_file_the_relative_one_did():
    """The decoded path was put back into the URI, which SQLAlchemy decodes again: a%2541b/m.db
    (the file a%41b/m.db) became aAb/m.db, another store, for a sweep's jobs."""
    from cnnx.tracking.sqlite_store import absolute_store_uri, sqlite_path

    for uri, file in (("sqlite:///a%2541b/m.db", "/w/a%41b/m.db"), ("sqlite:///a b/m.db", "/w/a b/m.db"),
                      ("sqlite:///x/../m.db?timeout=5", "/w/m.db")):
        assert str(sqlite_path(absolute_store_uri(uri, "/w"))) == file, uri
