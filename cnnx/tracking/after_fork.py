"""A forked process must not share its parent's open database connections.

MLflow keeps one SQLAlchemy engine per store URI, with a pool of open connections. A process
forked from one that has used the store (cnnx's tracking process; joblib sweep workers,
``cnnx.fork_workers``) inherits that pool, and two processes talking
through one sqlite or server connection corrupt each other's traffic. SQLAlchemy's remedy is
``engine.dispose(close=False)`` in the child: the pool forgets the inherited connections
without closing them under the parent, and the child opens its own.
"""

from __future__ import annotations

import os
import sys


def forget_inherited_connections() -> None:
    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    if module is None:
        return
    for engine in list(module.SqlAlchemyStore._engine_map.values()):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_inherited_connections)
