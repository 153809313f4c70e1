"""A new sqlite MLflow store appears whole: its schema is built aside, then moved into place.

MLflow creates a missing sqlite database, then runs some fifty schema migrations in it for a
couple of seconds. Anyone who opens the file in between (``mlflow ui``, ``cnnx compare``,
another run) sees tables missing and starts migrating it too, and one of the two fails
("duplicate column name"). Building the schema in a temporary file and linking it into place
leaves nothing half-built to find.
"""

from __future__ import annotations

import os
from pathlib import Path


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``sqlite:////abs.db`` is absolute), else None."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return None
    return Path(uri[len("sqlite:///"):])


def create_store_atomically(uri: str) -> None:
    """Create the schema of a sqlite store that does not exist yet; any other store is left alone."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        return
    try:
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables
    except ImportError:  # an MLflow without this helper creates the store itself, as before
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.creating")
    engine = sqlalchemy.create_engine(f"sqlite:///{temporary}")
    try:
        _initialize_tables(engine)
        engine.dispose()
        try:
            os.link(temporary, path)  # atomic, and refuses to replace a store created meanwhile
        except FileExistsError:
            pass
    finally:
        engine.dispose()
        temporary.unlink(missing_ok=True)
