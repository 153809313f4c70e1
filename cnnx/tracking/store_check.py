"""What MLflow would refuse about a local store, found before anything is trained.

MLflow meets most of a store's problems only at its first write: a read-only ``mlflow.db``, an
experiment deleted in the UI, a schema written by another MLflow version. A tracking process
(``tracking.background``) makes that write while the trainer already trains, so such a run
trained to the end before it failed, leaving checkpoints of a run that was never logged.
Waiting for the tracking process to start would cost every run about a second (MLflow's
import); these checks read the sqlite file with Python's own ``sqlite3`` in a few milliseconds
instead, in the training process, and raise the one-line error a user can act on.

Nothing here imports MLflow. What cannot be decided from the file (a store that is busy, a table
this MLflow does not have) is let through: MLflow itself is still the last word.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from cnnx.tracking.mlflow_tracker import TrackingError, deleted_experiment, run_store_setting, unusable_store
from cnnx.tracking.sqlite_store import sqlite_path

_SQLITE_HEADER = b"SQLite format 3\x00"
_BUSY_SECONDS = 1.0


def is_remote(uri: str) -> bool:
    """Anything but a local sqlite file or folder store (a tracking server, Databricks, a
    database server): there, failing to connect is likely and can only be found by trying."""
    return urlparse(uri).scheme not in ("", "file", "sqlite") or uri.startswith("databricks")


def check_store_uri(uri: str, setting: str) -> None:
    """Refuse a ``sqlite:`` URI that names no database file: SQLAlchemy opens ``sqlite:///``
    (``sqlite:///$DB`` with ``DB`` unset) as a database in memory, which vanishes with the
    process, and a folder only after minutes of MLflow's retries."""
    if not uri.startswith("sqlite:"):
        return
    database = sqlite_path(uri)  # None for sqlite:// and :memory:; "." for sqlite:/// alone
    if database is None or database == Path("."):
        raise TrackingError(f"{setting}={uri!r} names no database file; expected sqlite:///PATH.db")
    if database.is_dir():
        raise TrackingError(f"{setting}={uri!r} is a folder; expected a database file path "
                            f"(sqlite:///{database / 'mlflow.db'})")


def check_local_store(uri: str) -> None:
    """What MLflow would fail on with a local store (a sqlite file or a folder), checked before
    anything is trained; nothing for a remote one."""
    if is_remote(uri):
        return
    setting = run_store_setting(uri)
    check_store_uri(uri, setting)
    database = sqlite_path(uri)
    if database is None:
        folder = Path(urlparse(uri).path if uri.startswith("file:") else uri)
    else:
        folder = database.parent  # sqlite:///rel/x.db, sqlite:////abs/x.db
    problem = None
    try:
        if database is not None and database.is_file():
            problem = _unusable_database(database)
        else:
            if database is None:
                # A folder store: MLflow makes the folder itself (or, since 3.x, refuses folder
                # stores). Made here, an empty folder would stand where the sqlite:///PATH that
                # the refusal suggests has to create its file.
                folder = next(parent for parent in (folder, *folder.parents) if parent.exists())
            else:
                folder.mkdir(parents=True, exist_ok=True)
            try:
                # Creating a file is the only sure test: root passes os.access even on /proc.
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as exc:
                problem = f"cannot create files in '{folder}': {exc.strerror}"
    except OSError as exc:
        raise unusable_store(uri, exc) from exc
    if problem:
        raise TrackingError(f"cannot use MLflow store {uri!r} ({setting}): {problem}")


def _unusable_database(database: Path) -> str | None:
    """Why an existing sqlite file cannot be a store this run writes to (None: it can)."""
    with database.open("rb") as file:
        header = file.read(len(_SQLITE_HEADER))
    if not header:
        return None  # sqlite takes an empty file as a new database; MLflow builds its schema in it
    if header != _SQLITE_HEADER:
        return f"'{database}' is not an SQLite database"
    revision = None
    try:
        with _connect(database) as connection:
            revision = _schema_revision(connection)
            _write_and_roll_back(connection)
    except sqlite3.OperationalError as exc:
        if _read_only(exc):
            # sqlite writes its journal beside the file: a writable file in a read-only folder
            # fails the same way, and then the folder is what to fix.
            folder_read_only = not os.access(database.parent, os.W_OK)
            what = (f"'{database}' is" if not folder_read_only else f"its folder '{database.parent}' is"
                    if os.access(database, os.W_OK) else f"'{database}' and its folder are")
            return f"{what} read-only ({exc}); a run needs a store it can write"
        if not _busy(exc):  # busy: another run is writing, and a store in use is a writable one
            return f"'{database}' cannot be read as a store ({exc})"
    except sqlite3.DatabaseError as exc:  # "database disk image is malformed", "file is not a database"
        return f"'{database}' is damaged ({exc}); restore it from a backup or choose another store"
    return _revision_problem(database, revision)


def _write_and_roll_back(connection: sqlite3.Connection) -> None:
    """Only a write tells a read-only file, folder or mount (root passes os.access on a read-only
    mount). Setting user_version to itself writes the header page, which opens the rollback
    journal beside the file; nothing is committed."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        connection.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        connection.execute("ROLLBACK")


@contextlib.contextmanager
def _connect(database: Path):
    # mode=rw: never creates the file. A store another run is writing to is waited for a
    # moment only (its writes take milliseconds); busy for longer, it is left to MLflow.
    connection = sqlite3.connect(f"{database.absolute().as_uri()}?mode=rw", uri=True, timeout=_BUSY_SECONDS,
                                 isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in str(exc)


def _read_only(exc: sqlite3.OperationalError) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or "readonly" in str(exc)


def _schema_revision(connection: sqlite3.Connection) -> str | None:
    """The MLflow schema revision the store records (None: not an MLflow store yet, which MLflow
    gives its tables). Reading the schema also finds a damaged file early."""
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "alembic_version" not in tables:
        return None
    row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def _revision_problem(database: Path, revision: str | None) -> str | None:
    """A store of another MLflow schema revision, which MLflow refuses to open."""
    expected = latest_schema_revision()
    if revision is None or expected is None or revision == expected:
        return None
    from importlib.metadata import version

    mlflow = f"MLflow {version('mlflow')}"
    if revision in _known_revisions():
        return (f"'{database}' has an older MLflow's schema (revision {revision}; {mlflow} expects {expected}); "
                f"back it up, then upgrade it with: mlflow db upgrade sqlite:///{database}")
    return (f"'{database}' has a schema revision {mlflow} does not know ({revision}), likely written by a newer "
            f"MLflow; upgrade MLflow (pip install -U mlflow) or choose another store")


@functools.cache
def _read_revisions() -> tuple[frozenset[str], str | None]:
    """MLflow's schema revisions and its newest, read from its migration files (a few ms;
    importing MLflow's own alembic helper would take seconds)."""
    from importlib.metadata import PackageNotFoundError, distribution

    revisions: set[str] = set()
    parents: set[str] = set()
    try:
        folder = Path(str(distribution("mlflow").locate_file("mlflow/store/db_migrations/versions")))
        for path in folder.glob("*.py"):
            text = path.read_text(encoding="utf-8")
            revision = re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.M)
            down = re.search(r"^down_revision\s*=\s*(.*)$", text, re.M)
            if revision:
                revisions.add(revision.group(1))
                parents.update(re.findall(r"['\"](\w+)['\"]", down.group(1) if down else ""))
    except (PackageNotFoundError, OSError, UnicodeDecodeError):
        pass
    heads = revisions - parents
    # Anything but one head (an install laid out otherwise): leave the verdict to MLflow.
    return frozenset(revisions), next(iter(heads)) if len(heads) == 1 else None


def _known_revisions() -> frozenset[str]:
    return _read_revisions()[0]


def latest_schema_revision() -> str | None:
    return _read_revisions()[1]


def check_experiment(uri: str, experiment_name: str, run_id: str | None = None,
                     setting: str = "experiment_name") -> None:
    """Refuse a run into an experiment deleted in the UI (MLflow only accepts active ones): the
    experiment ``experiment_name`` names, or for a resumed run, the experiment of ``run_id``."""
    database = sqlite_path(uri)
    if database is None or not database.is_file():
        return
    try:
        with _connect(database) as connection:
            found = None
            if run_id is not None:
                found = connection.execute(
                    "SELECT e.experiment_id, e.name, e.lifecycle_stage FROM runs r "
                    "JOIN experiments e ON e.experiment_id = r.experiment_id WHERE r.run_uuid = ?",
                    (run_id,)).fetchone()
            if found is None:
                run_id = None  # not in this store: the run will be a new one in experiment_name
                # An active experiment of that name first (names are unique per MLflow workspace).
                found = connection.execute(
                    "SELECT experiment_id, name, lifecycle_stage FROM experiments WHERE name = ? "
                    "ORDER BY lifecycle_stage = 'active' DESC", (experiment_name,)).fetchone()
    except sqlite3.Error:
        return  # no MLflow tables yet, or busy: MLflow decides
    if found is not None and found[2] == "deleted":
        raise deleted_experiment(uri, found[1], str(found[0]), run_id, setting)
