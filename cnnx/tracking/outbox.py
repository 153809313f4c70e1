"""Tracking calls that must not be lost when the MLflow store goes away mid-run.

Every call (a batch of metrics, an image, an artifact, the final status) is queued and sent
in order; if the store is unreachable the queue simply grows and training goes on. Each new
call retries the queue first, so everything goes out as soon as the store is back. At the
end of the run ``drain`` retries with bounded exponential back-off; whatever still cannot be
sent is written to a local folder (``spill``) and the user is told where, with the command
that replays it: ``python -m cnnx.tracking.outbox DIR``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPILL_FILE = "unsent.jsonl"


@dataclass
class Pending:
    send: Callable[[], None]
    #: How to write this call to disk and replay it: JSON, plus arrays saved beside it.
    record: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class Outbox:
    def __init__(self, store: str, warn: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.warn = warn or (lambda message: print(f"cnnx: warning: {message}", file=sys.stderr))
        self.sleep = sleep
        self.pending: deque[Pending] = deque()
        self.unreachable_since: float | None = None

    def submit(self, call: Pending) -> bool:
        self.pending.append(call)
        return self.flush()

    def flush(self) -> bool:
        """Send what is queued, in order; False (and keep the rest) at the first failure."""
        while self.pending:
            try:
                self.pending[0].send()
            except Exception as exc:  # any transport or server error: keep it for later
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
                    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
                    self.warn(f"MLflow store {self.store} unreachable ({reason}); training goes on, "
                              f"metrics are kept and sent when it is back")
                return False
            self.pending.popleft()
        if self.unreachable_since is not None:
            self.warn(f"MLflow store {self.store} reachable again after "
                      f"{time.monotonic() - self.unreachable_since:.0f} s; buffered calls sent")
            self.unreachable_since = None
        return True

    def drain(self, timeout: float) -> bool:
        """Retry with exponential back-off (1, 2, 4 … 10 s) for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        delay = 1.0
        while not self.flush():
            if time.monotonic() + delay > deadline:
                return False
            self.sleep(delay)
            delay = min(delay * 2, 10.0)
        return True

    def spill(self, directory: Path) -> Path | None:
        """Write the calls still queued to ``directory``; None when nothing is left."""
        if not self.pending:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / SPILL_FILE
        with open(path, "a", encoding="utf-8") as handle:
            for number, call in enumerate(self.pending):
                record = dict(call.record)
                for name, array in call.arrays.items():
                    file = directory / f"{int(time.time() * 1000)}-{number}-{name}.npy"
                    np.save(file, array, allow_pickle=False)
                    record.setdefault("arrays", {})[name] = file.name
                handle.write(json.dumps(record) + "\n")
        self.pending.clear()
        return path


def replay(directory: Path, tracking_uri: str | None = None) -> int:
    """Send a spilled outbox to the store; returns the number of calls sent."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from cnnx.tracking.mlflow_tracker import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    sent = 0
    for line in (directory / SPILL_FILE).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        kind, run_id = record["kind"], record["run_id"]
        if kind == "metrics":
            client.log_batch(run_id, metrics=[Metric(*m) for m in record["metrics"]])
        elif kind == "image":
            image = np.load(directory / record["arrays"]["image"], allow_pickle=False)
            client.log_image(run_id, image, key=record["key"], step=record["step"], synchronous=True)
        elif kind == "weights":
            import tempfile

            weights = {name[len("weights."):]: np.load(directory / file, allow_pickle=False)
                       for name, file in record["arrays"].items()}
            with tempfile.TemporaryDirectory() as tmp:
                np.savez(Path(tmp) / "weights.npz", **weights)
                client.log_artifact(run_id, str(Path(tmp) / "weights.npz"))
        elif kind == "status":
            client.set_terminated(run_id, record["status"])
        elif kind == "tag":
            client.set_tag(run_id, record["key"], record["value"])
        sent += 1
    return sent


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Send tracking calls a run could not deliver.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args()
    print(f"sent {replay(args.directory, args.tracking_uri)} calls")
