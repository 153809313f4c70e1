"""A real MLflow tracking server (MLflow's own Flask app and REST handlers over a sqlite
store, artifacts proxied) in a lightweight process: `mlflow server` also starts uvicorn
workers and a job runner, which take tens of seconds to come up on a busy 2-core machine.

    python tests/mlflow_test_server.py DB_PATH ARTIFACT_DIR PORT
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    db, artifacts, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = f"sqlite:///{db}"
    os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = "mlflow-artifacts:/"
    os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
    os.environ["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = artifacts
    from werkzeug.serving import make_server

    from mlflow.server import app
    from mlflow.server.handlers import _get_tracking_store

    _get_tracking_store()  # create the tables before accepting requests
    server = make_server("127.0.0.1", port, app, threaded=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
