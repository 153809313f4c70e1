"""A forked process must not share its parent's open database connections.

MLflow keeps one SQLAlchemy engine per store URI, with a pool of open connections. A process
forked from one that has used the store (cnnx's tracking process; joblib sweep workers,
``cnnx.fork_workers``) inherits that pool, and two processes talking
through one sqlite or server connection corrupt each other's traffic. SQLAlchemy's remedy is
``engine.dispose(close=False)`` in the child: the pool forgets the inherited connections
without closing them under the parent, and the child opens its own.

MLflow's telemetry client is dropped in the child as well: its consumer threads were not
forked with it, and its lock may have been held by one of them at the moment of the fork.
The child then sends no telemetry, as if it were disabled.
"""

from __future__ import annotations

import os
import sys
import threading


def forget_inherited_connections() -> None:
    store = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    if store is not None:
        for engine in list(store.SqlAlchemyStore._engine_map.values()):
            engine.dispose(close=False)
    telemetry = sys.modules.get("mlflow.telemetry.client")
    if telemetry is not None and hasattr(telemetry, "_MLFLOW_TELEMETRY_CLIENT"):
        telemetry._client_lock = threading.Lock()
        telemetry._MLFLOW_TELEMETRY_CLIENT = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_inherited_connections)
