"""A new sqlite MLflow store appears whole: its schema is built aside, then linked into place.

MLflow creates a missing sqlite database, then runs some fifty schema migrations in it for a
couple of seconds. Anyone who opens the file in between (``mlflow ui``, ``cnnx compare``,
another run) sees tables missing and starts migrating it too, and one of the two fails
("duplicate column name"). Building the schema in a temporary file and linking it into place
leaves nothing half-built to find.

The tracking process builds the schema ahead (``build_aside``) while the trainer loads its
data, and links it only when the run starts (``create_store_atomically``): a run that fails on
its config leaves no store behind.

The schema is the same for every new store of one MLflow version and holds nothing about
where it lives (MLflow adds the default experiment, with its artifact path, when it first
opens the store). So the first schema built is kept in the cnnx cache (``cnnx.cache_dir``)
and later stores start as a copy of it: milliseconds instead of seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import unquote

#: Schemas built ahead by this process: database path → the scratch file holding it.
_built: dict[Path, Path] = {}
#: Scratch files this process has created and not yet linked or removed.
_scratch: set[Path] = set()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``sqlite:////abs.db`` is absolute), else None."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return None
    # ?timeout=…: SQLAlchemy's options; %20 and the like: SQLAlchemy decodes them, so the file
    # MLflow opens for a%20b/m.db is "a b/m.db".
    return Path(unquote(uri[len("sqlite:///"):].partition("?")[0]))


def absolute_store_uri(uri: str, cwd: str | os.PathLike[str] | None = None) -> str:
    """``uri`` with a local path made absolute against ``cwd`` (the working directory by
    default): ``sqlite:///mlflow.db`` → ``sqlite:////work/mlflow.db``, the same store from any
    directory, as checkpoints and sweep links record it. Servers and databases are left as they are."""
    base = os.getcwd() if cwd is None else os.fspath(cwd)
    if sqlite_path(uri) is not None:
        # The path as written, %-escapes and all: SQLAlchemy decodes them, and decoded here they
        # would name another file once it decodes the result again (a%2541b → a%41b → aAb).
        written, question, options = uri[len("sqlite:///"):].partition("?")
        return f"sqlite:///{os.path.normpath(os.path.join(base, written))}{question}{options}"
    if "://" not in uri and not uri.startswith(("file:", "databricks")):
        return os.path.abspath(os.path.join(base, uri))  # a folder store given as a bare path
    return uri


def build_aside(uri: str) -> None:
    """Build the schema of a sqlite store that does not exist yet in a scratch file beside it."""
    path = sqlite_path(uri)
    if path is None or path.exists() or path in _built:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.creating")
    _scratch.add(scratch)
    template = _template_path()
    try:
        if not _copy_template(template, scratch):
            if not _initialize(scratch):
                _remove(scratch)
                return
            _keep_template(scratch, template)
    except BaseException:
        _remove(scratch)
        raise
    _built[path] = scratch


def _initialize(scratch: Path) -> bool:
    """Run MLflow's schema migrations in ``scratch``; False if this MLflow cannot do it apart."""
    try:
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables
    except ImportError:  # an MLflow without this helper creates the store itself, as before
        return False
    engine = sqlalchemy.create_engine(f"sqlite:///{scratch}")
    # A scratch file until it is linked into place: no need to make each migration durable.
    sqlalchemy.event.listen(engine, "connect", _without_syncing)
    quiet = logging.getLogger("mlflow.store.db.utils")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # "Creating initial MLflow database tables...": not news here
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
        quiet.setLevel(level)
    return True


def _template_path() -> Path | None:
    """Where the schema of this MLflow and SQLAlchemy is cached (None: caching is off)."""
    from importlib.metadata import PackageNotFoundError, distribution, version

    from cnnx.cache_dir import cache_dir

    folder = cache_dir()
    if folder is None:
        return None
    try:
        # The schema is MLflow's migrations as SQLAlchemy emits them. The migration files are
        # named too, for installs (from source) whose version string outlives a new migration.
        migrations = Path(str(distribution("mlflow").locate_file("mlflow/store/db_migrations/versions")))
        names = sorted(p.name for p in migrations.glob("*.py"))
        versions = f"mlflow-{version('mlflow')}-sqlalchemy-{version('sqlalchemy')}"
    except (PackageNotFoundError, OSError):
        return None
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    return folder / f"{versions}-{digest}-schema.db"


def _copy_template(template: Path | None, scratch: Path) -> bool:
    """Start ``scratch`` as a copy of a cached schema; False when there is no usable one."""
    if template is None:
        return False
    try:
        shutil.copyfile(template, scratch)
        connection = sqlite3.connect(scratch)  # our own copy: no URI quoting of odd paths
        try:
            # Whole (a few ms), and a schema that MLflow finished migrating: its revision is recorded.
            (check,) = connection.execute("PRAGMA quick_check").fetchone()
            (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            connection.close()
        if check != "ok" or not revision:
            raise ValueError(f"unusable schema template {template}")
        return True
    except (OSError, sqlite3.Error, TypeError, ValueError):
        scratch.unlink(missing_ok=True)
        return False


def _keep_template(scratch: Path, template: Path | None) -> None:
    """Cache a freshly built schema for the next new store; a cache that cannot be written is skipped."""
    if template is None:
        return
    from cnnx.cache_dir import write_atomically

    try:
        write_atomically(template, lambda stream: stream.write(scratch.read_bytes()))
    except OSError:
        pass


def create_store_atomically(uri: str) -> None:
    """Make a missing sqlite store exist, complete; any other store is left alone."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        discard_built()
        return
    build_aside(uri)
    scratch = _built.pop(path, None)
    if scratch is None:
        return
    try:
        os.link(scratch, path)  # atomic, and refuses to replace a store created meanwhile
    except FileExistsError:
        pass
    finally:
        _remove(scratch)


def discard_built() -> None:
    """Remove every scratch file, built or half-built (the run stopped before it started)."""
    _built.clear()
    for scratch in list(_scratch):
        _remove(scratch)


def _remove(scratch: Path) -> None:
    scratch.unlink(missing_ok=True)
    _scratch.discard(scratch)


def _without_syncing(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=OFF")
    cursor.execute("PRAGMA journal_mode=MEMORY")
    cursor.close()
