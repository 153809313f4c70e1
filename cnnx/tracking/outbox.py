"""Tracking calls that must not be lost when the MLflow store goes away mid-run.

Every call (a batch of metrics, an image, an artifact, the final status) is queued and sent
in order; if the store is unreachable the queue simply grows and training goes on. Each new
call retries the queue first, so everything goes out as soon as the store is back. At the
end of the run ``drain`` retries with bounded exponential back-off; whatever still cannot be
sent is written to a local folder (``spill``) and the user is told where, with the command
that replays it: ``python -m cnnx.tracking.outbox DIR``. The folder is a queue too: a call
leaves it once the store has it, so a replay that stops half-way sends only the rest when run
again, and one that finished sends nothing more.

While a replay runs, what has left the queue is a count in ``unsent.progress`` beside it, not a
rewrite of ``unsent.jsonl`` after every call: rewriting the rest each time made a replay of N
calls write O(N²) bytes (hundreds of megabytes after a long outage). The file is rewritten
once, when the replay ends or stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnx.cache_dir import write_atomically
from cnnx.cli import report_user_errors
from cnnx.cli import warn as cli_warn
from cnnx.errors import CnnxError, ConfigError, flat_message
from cnnx.folder_lock import lock_folder

if TYPE_CHECKING:
    from mlflow import MlflowClient

SPILL_FILE = "unsent.jsonl"
#: How many calls at the head of SPILL_FILE a replay has delivered (see ``_Delivered``).
PROGRESS_FILE = "unsent.progress"
#: The arrays of delivered calls, listed while a replay rewrites the spill file (see ``_Delivered.compact``).
DELIVERED_ARRAYS = "unsent.delivered-arrays"


class OutboxError(CnnxError):
    """A folder to replay that holds no readable spilled outbox."""


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
        self.warn = warn or cli_warn
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
                    reason = flat_message(exc)[:200]
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
        with _folder_lock(directory), open(path, "a+", encoding="utf-8") as handle:
            if handle.tell() and not _ends_with_newline(path):
                handle.write("\n")  # a line cut short (a kill, a full disk) must not swallow the next one
            for call in self.pending:
                record = dict(call.record)
                for name, array in call.arrays.items():
                    # Unique across runs spilling into one folder, in the same millisecond too.
                    file = directory / f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}-{name}.npy"
                    np.save(file, array, allow_pickle=False)
                    record.setdefault("arrays", {})[name] = file.name
                handle.write(json.dumps(record) + "\n")
        self.pending.clear()
        return path


def replay(directory: Path, tracking_uri: str | None = None) -> int:
    """Send a spilled outbox to the store, in order; returns the number of calls sent.

    A call leaves the folder as soon as the store has it (it joins the delivered count; its
    line and arrays go when the replay ends or stops), so a replay that stops half-way sends
    only the rest next time, and a finished one leaves an empty ``unsent.jsonl``: there is
    nothing left to send twice.
    """
    from mlflow import MlflowClient

    from cnnx.tracking.mlflow_tracker import existing_store, store_setting, unusable_store

    lines, size = _spilled_lines(directory)
    delivered = _Delivered(directory, lines)
    calls = _checked_calls(directory, lines, skip=delivered.count)
    if not calls:
        delivered.compact(lines, size)
        return 0
    store = existing_store(tracking_uri)
    client = None
    try:
        for number, (line, record) in enumerate(calls):
            try:
                client = client or MlflowClient(store)  # here: opening a store can fail as sending does
                _send(client, directory, record)
            except Exception as exc:  # noqa: BLE001 — whatever the store said, the rest waits for it
                if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":  # no retry can help
                    raise ConfigError(
                        f"run {record.get('run_id')} is not in store {store} ({store_setting(tracking_uri)}): "
                        f"the calls in {directory} belong to another store (pass its --tracking-uri) or the "
                        f"run was deleted; sent {number} of {len(calls)} calls, the other "
                        f"{len(calls) - number} stay in {directory}") from None
                error = unusable_store(store, exc, store_setting(tracking_uri))
                raise type(error)(f"{error}; sent {number} of {len(calls)} calls, the other {len(calls) - number} "
                                  f"stay in {directory}: run this command again once the store works") from None
            delivered.one_more(line)  # whenever a replay stops, no call is lost; at most this one goes twice
    finally:
        delivered.compact(lines, size)
    return len(calls)


class _Delivered:
    """How many calls at the head of the spill file have been delivered, kept on disk as that
    count and the SHA-256 of their lines.

    The count applies only to a file that still starts with those lines: a copy of the folder
    (another disk, a backup restored) keeps it, and a run that spills again appends after them;
    the file a replay compacts, or one edited by hand, no longer matches it.
    """

    def __init__(self, directory: Path, lines: list[str]) -> None:
        self.directory = directory
        self.progress_file = directory / PROGRESS_FILE
        self.count, self._digest = 0, hashlib.sha256()
        try:
            recorded = json.loads(self.progress_file.read_text(encoding="utf-8"))
            count, digest = int(recorded["calls"]), str(recorded["sha256"])
        except Exception:  # noqa: BLE001 — no count, or not one a replay wrote: every call is still to send
            return
        prefix = hashlib.sha256()
        for line in lines[:count]:
            prefix.update(_line_bytes(line))
        if 0 <= count <= len(lines) and prefix.hexdigest() == digest:
            self.count, self._digest = count, prefix

    def one_more(self, line: str) -> None:
        self.count += 1
        self._digest.update(_line_bytes(line))
        _replace_text(self.progress_file, json.dumps({"calls": self.count, "sha256": self._digest.hexdigest()}))

    def compact(self, lines: list[str], size_read: int) -> None:
        """Rewrite the spill file as the calls still to send, delete the delivered calls'
        arrays, then drop the count.

        Killed at any point, the folder still says what is left: the count does not match a
        rewritten file, and the arrays to delete are listed (``DELIVERED_ARRAYS``) before the
        rewrite, for the next replay to finish. Only arrays no line names go, never any other
        file. Lines past the ``size_read`` bytes the replay started from (a run spilling into the
        same folder meanwhile) are kept: spills and this rewrite take turns on a lock.
        """
        spill_file, listed = self.directory / SPILL_FILE, self.directory / DELIVERED_ARRAYS
        try:
            with _folder_lock(self.directory):
                doomed = set(_listed_arrays(listed))
                if self.count:
                    doomed |= {file for line in lines[:self.count] for file in _array_files(line)}
                    if doomed:
                        _replace_text(listed, json.dumps(sorted(doomed)))
                    with spill_file.open("rb") as handle:
                        handle.seek(size_read)
                        appended = handle.read().decode("utf-8")
                    _replace_text(spill_file, "".join(f"{line}\n" for line in lines[self.count:]) + appended)
                named = {file for line in spill_file.read_text(encoding="utf-8").splitlines()
                         for file in _array_files(line)}
                for file in doomed - named:
                    (self.directory / Path(file).name).unlink(missing_ok=True)
                listed.unlink(missing_ok=True)
        except (OSError, UnicodeDecodeError):
            return  # (a full disk, say) the count on disk still says what was delivered
        self.progress_file.unlink(missing_ok=True)


def _replace_text(path: Path, text: str) -> None:
    write_atomically(path, lambda stream: stream.write(text.encode()))


def _listed_arrays(path: Path) -> list[str]:
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 — none listed, or not a list a replay wrote
        return []
    return [name for name in listed if isinstance(name, str)] if isinstance(listed, list) else []


def _array_files(line: str) -> list[str]:
    return _array_files_or_none(line) or []


def _array_files_or_none(line: str | bytes) -> list[str] | None:
    """The arrays a spilled call names, or None when ``line`` is no whole record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return list(record.get("arrays", {}).values()) if isinstance(record, dict) else None


@contextlib.contextmanager
def _folder_lock(directory: Path) -> Iterator[None]:
    """The spill folder locked for the block (``cnnx.folder_lock``)."""
    descriptor = lock_folder(directory)
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _line_bytes(line: str) -> bytes:
    return f"{line}\n".encode()


#: What a folder given to replay should be, for the errors that find something else.
_EXPECTED = "the folder a run named when it saved unsent tracking calls (<run dir>/mlflow-unsent)"


def _spilled_lines(directory: Path) -> tuple[list[str], int]:
    """The spill file's lines, and how many bytes they came from."""
    path = directory / SPILL_FILE
    if not path.is_file():
        problem = "does not exist" if not directory.exists() else f"holds no {SPILL_FILE}"
        raise OutboxError(f"{directory} {problem}; expected {_EXPECTED}")
    try:
        with _folder_lock(directory):
            data = path.read_bytes()
        # Where the lock does nothing, a spill may be writing the last line: one that is not yet
        # a whole record waits for the next replay (a whole one, its newline cut, is sent).
        tail = data[data.rfind(b"\n") + 1:]
        if tail and _array_files_or_none(tail) is None:
            data = data[:len(data) - len(tail)]
        return data.decode("utf-8").splitlines(), len(data)
    except (OSError, UnicodeDecodeError) as exc:
        raise OutboxError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _checked_calls(directory: Path, lines: list[str], skip: int) -> list[tuple[str, dict[str, Any]]]:
    """(line, call) for each call after the first ``skip`` (delivered already), all checked
    before any is sent."""
    path = directory / SPILL_FILE
    calls = []
    for number, line in enumerate(lines[skip:], skip + 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not {"kind", "run_id"} <= record.keys():
            raise OutboxError(f"{path}, line {number}, is not a tracking call cnnx wrote; expected {_EXPECTED}")
        missing = [name for name in record.get("arrays", {}).values() if not (directory / name).is_file()]
        if missing:
            raise OutboxError(f"{directory / missing[0]}, named on line {number} of {path}, is missing")
        calls.append((line, record))
    return calls


def _send(client: MlflowClient, directory: Path, record: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    from cnnx.tracking.mlflow_tracker import end_run

    kind, run_id = record["kind"], record["run_id"]
    if kind == "metrics":
        client.log_batch(run_id, metrics=[Metric(*m) for m in record["metrics"]])
    elif kind == "image":
        image = np.load(directory / record["arrays"]["image"], allow_pickle=False)
        client.log_image(run_id, image, key=record["key"], step=record["step"], synchronous=True)
    elif kind == "weights":
        from cnnx.tracking.mlflow_tracker import log_weights

        weights = {name[len("weights."):]: np.load(directory / file, allow_pickle=False)
                   for name, file in record["arrays"].items()}
        log_weights(client, run_id, weights, record.get("description"))  # spilled by an earlier cnnx: none
    elif kind == "status":
        end_run(client, run_id, record["status"])
    elif kind == "tag":
        client.set_tag(run_id, record["key"], record["value"])


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    import argparse

    # the command a run prints: "outbox.py" would name a file the user never typed
    parser = argparse.ArgumentParser(prog="python -m cnnx.tracking.outbox",
                                     description="Send tracking calls a run could not deliver.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    sent = replay(args.directory, args.tracking_uri)
    if sent:
        print(f"sent {sent} calls")
    else:
        print(f"nothing left to send in {args.directory}: every call it held has been delivered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
