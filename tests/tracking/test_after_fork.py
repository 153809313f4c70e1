"""A process forked after MLflow was used logs through its own connections, without the
parent's telemetry client (cnnx.tracking.after_fork)."""

from __future__ import annotations

import os

import pytest

import cnnx.tracking.after_fork  # noqa: F401  registers the hook, as cnnx does on import

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_a_forked_child_drops_inherited_connections_and_telemetry(tmp_path):
    import mlflow.telemetry.client as telemetry
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = MlflowClient(uri)
    experiment = parent.create_experiment("forked")
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never return into pytest
        code = 1
        try:
            child = MlflowClient(uri)
            run = child.create_run(experiment)
            child.log_metric(run.info.run_id, "acc", 0.5)
            child.set_terminated(run.info.run_id)
            code = 0 if telemetry.get_telemetry_client() is None else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    (run,) = parent.search_runs([experiment])
    assert run.info.status == "FINISHED" and run.data.metrics == {"acc": 0.5}
    parent.create_run(experiment)  # the parent's own connections still work
