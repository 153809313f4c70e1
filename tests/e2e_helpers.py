"""Run the real CLI in a subprocess and read the real MLflow store it wrote."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path


def run_cli(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m cnnx ARGS`` in ``cwd``: the store defaults to ``cwd/mlflow.db``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cnnx", *args], cwd=cwd, env=environment,
        capture_output=True, text=True, timeout=timeout,
    )


def run_cli_many(runs: list[tuple[list[str], Path]], parallel: int = 2, timeout: float = 600,
                 env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """``run_cli`` for each (args, cwd), ``parallel`` at a time, each forked from one interpreter
    that has done cnnx's imports (``preloaded_cli.py``): for many short runs, such as the
    bad-input cases. Without ``os.fork``, one ``run_cli`` after another."""
    if not hasattr(os, "fork"):
        return [run_cli(args, cwd, timeout, env) for args, cwd in runs]
    import json
    import tempfile

    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment.update(env or {})
    with tempfile.TemporaryDirectory(prefix="cnnx-runs-") as folder:
        spec = [{"args": args, "cwd": str(cwd), "stdout": f"{folder}/{n}.out", "stderr": f"{folder}/{n}.err"}
                for n, (args, cwd) in enumerate(runs)]
        (Path(folder) / "runs.json").write_text(json.dumps(spec))
        runner = subprocess.run([sys.executable, str(Path(__file__).with_name("preloaded_cli.py")),
                                 f"{folder}/runs.json", str(parallel)],
                                env=environment, capture_output=True, text=True, timeout=timeout)
        assert runner.returncode == 0, runner.stderr[-3000:]
        codes = json.loads(runner.stdout.strip().splitlines()[-1])
        return [subprocess.CompletedProcess(["cnnx", *run["args"]], code, Path(run["stdout"]).read_text(),
                                            Path(run["stderr"]).read_text())
                for run, code in zip(spec, codes, strict=True)]


def store_client(cwd: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")


def all_runs(cwd: Path):
    """Every run in every experiment of the store in ``cwd`` (empty when there is no store)."""
    if not (cwd / "mlflow.db").exists():
        return []
    client = store_client(cwd)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def metric_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def list_artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    """All artifact paths of a run, recursively."""
    found = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found.extend(list_artifacts(client, run_id, item.path))
        else:
            found.append(item.path)
    return found


def logged_model(client, run_id: str):
    """The run's MLflow logged model (what ``runs:/<run_id>/model`` loads)."""
    experiment = client.get_run(run_id).info.experiment_id
    (model,) = [m for m in client.search_logged_models([experiment]) if m.source_run_id == run_id]
    return model


def start_cli(args: list[str], cwd: Path, env: dict | None = None, start_new_session: bool = False,
              terminal: int | None = None) -> subprocess.Popen:
    """``python -m cnnx ARGS`` in the background, for tests that signal or kill it
    (``start_new_session``: in a process group of its own, to signal as a whole; ``terminal``:
    the file descriptor of a terminal to run in, instead of pipes)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment.update(env or {})
    streams = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE) if terminal is None else \
        dict(stdin=terminal, stdout=terminal, stderr=terminal)
    return subprocess.Popen(
        [sys.executable, "-m", "cnnx", *args], cwd=cwd, env=environment, text=True,
        start_new_session=start_new_session, **streams,
    )


def processes() -> list[dict]:
    """Every live process (zombies, which have ended, left out): pid, ppid, pgid and command."""
    table = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,pgid=,stat=,args="], capture_output=True, text=True,
                           check=True).stdout
    found = []
    for line in table.splitlines():
        pid, ppid, pgid, stat, *command = line.split(None, 4)
        if not stat.startswith("Z"):
            found.append({"pid": int(pid), "ppid": int(ppid), "pgid": int(pgid), "command": "".join(command)})
    return found


def wait_until_group_is_gone(pgid: int, timeout: float = 15) -> list[dict]:
    """The processes of group ``pgid`` still alive after ``timeout`` s (none, as a rule)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in processes() if p["pgid"] == pgid]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of group ``pgid``: a failing test must not leave workers behind."""
    import signal

    for process in processes():
        if process["pgid"] == pgid:
            try:
                os.kill(process["pid"], signal.SIGKILL)
            except OSError:
                pass


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``path`` exists; fails early if ``process`` ends first."""
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            said = process.stderr.read()[-2000:] if process.stderr is not None else "(on a terminal)"
            raise AssertionError(f"process ended (exit {process.returncode}) before {path} appeared: {said}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def git_work_tree(folder: Path, dirty: bool = False) -> str:
    """Make ``folder`` a git work tree with one commit (a tracked file changed since, if
    ``dirty``); returns the commit."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    (folder / "notes.txt").write_text("first\n")
    git("add", "notes.txt")
    git("commit", "-q", "-m", "first")
    if dirty:
        (folder / "notes.txt").write_text("changed\n")
    return git("rev-parse", "HEAD")


def sweep_runs(client, experiment: str = "digits_small"):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("cnnx.sweep.role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def assert_complete_sweep(client, result, jobs: int, swept: set[str], interrupted: int = 0,
                          models: bool = False):
    """One FINISHED parent, ``jobs`` FINISHED children under it (plus ``interrupted`` ones that
    were stopped), and the summary on the parent; with ``models``, the children logged their
    models and the parent names the best one's."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stderr
    parents, children = sweep_runs(client)
    assert len(parents) == 1, [p.info.run_name for p in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert len(children) == jobs + interrupted, [c.info.run_name for c in children]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == jobs, [c.info.status for c in children]
    # nothing lost or run twice: every combination exactly once, its metrics logged
    assert len({tuple(c.data.params[k] for k in sorted(swept)) for c in finished}) == jobs
    assert all("val_acc" in c.data.metrics and "test_acc" in c.data.metrics for c in finished)

    best_val = {c.info.run_id: c.data.metrics["val_acc"] for c in finished}  # 1 epoch: last = best
    tags = parent.data.tags
    assert best_val[tags["cnnx.sweep.best_run_id"]] == max(best_val.values())
    assert parent.data.metrics["best_val_acc"] == max(best_val.values())
    best_child = next(c for c in finished if c.info.run_id == tags["cnnx.sweep.best_run_id"])
    assert json.loads(tags["cnnx.sweep.best_params"]) == {k: best_child.data.params[k] for k in sorted(swept)}
    # what the UI shows of the sweep on the parent's row: the best child's test figures, and
    # the settings no job varied, so that a search by params finds the sweep (a resumed
    # sweep logged them twice)
    assert {k: parent.data.metrics[f"best_{k}"] for k in ("test_acc", "test_loss")} == {
        k: best_child.data.metrics[k] for k in ("test_acc", "test_loss")}
    assert parent.data.params["model.name"] == best_child.data.params["model.name"]
    assert parent.data.params["trainer.epochs"] == best_child.data.params["trainer.epochs"]
    assert not {k for k in parent.data.params if k in swept or k.startswith(("tracking.", "sweep."))}
    if models:
        (output,) = client.get_run(best_child.info.run_id).outputs.model_outputs
        assert tags["cnnx.sweep.best_model_uri"] == f"models:/{output.model_id}"
    else:
        assert "cnnx.sweep.best_model_uri" not in tags

    assert {"comparison.csv", "comparison.png", "best_child.json"} <= set(list_artifacts(client, parent.info.run_id))
    table = list(csv.DictReader(Path(client.download_artifacts(parent.info.run_id, "comparison.csv")).open()))
    assert len(table) == len(children) and swept <= set(table[0]) and "best_val_acc" in table[0]
    return parent, finished
