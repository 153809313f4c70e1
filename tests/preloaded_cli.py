"""Many ``python -m cnnx ARGS`` runs from one interpreter that has done cnnx's imports.

Each run still goes through the real entry point (``cnnx.cli.entry``, which ``python -m cnnx``
calls) in a process of its own with its own working directory and output files, forked from
this one once the imports are done. A run that fails on its input then costs a fraction of a
second instead of ~1.5 s of interpreter start-up and imports; the bad-input suite has dozens.
This process starts no thread and opens no store before forking, so the forks are clean.

    python preloaded_cli.py RUNS.json PARALLEL

RUNS.json is a list of {"args": [...], "cwd": DIR, "stdout": FILE, "stderr": FILE}; the exit
codes are printed as one JSON list, in the same order.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import traceback

import cnnx.cli
from cnnx.fork_workers import JOB_MODULES, TRACKING_MODULES

# What a run imports, as a joblib sweep's forked workers have it (MLflow and its store too).
for module in (*JOB_MODULES, *TRACKING_MODULES, "mlflow.store.tracking.sqlalchemy_store"):
    importlib.import_module(module)


def start(run: dict) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.chdir(run["cwd"])
        for fd, path in ((1, run["stdout"]), (2, run["stderr"])):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        sys.argv = ["cnnx", *run["args"]]
        cnnx.cli.entry()  # ends the process itself when main() returns
    # What the interpreter does with an exception that reaches the top level:
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never back into this process's loop


def main() -> None:
    with open(sys.argv[1]) as stream:
        runs = json.load(stream)
    parallel = int(sys.argv[2])
    # Collections in the runs would otherwise walk (and copy) the whole inherited heap.
    gc.freeze()
    codes: list[int | None] = [None] * len(runs)
    waiting = list(enumerate(runs))
    running: dict[int, int] = {}
    while waiting or running:
        while waiting and len(running) < parallel:
            number, run = waiting.pop(0)
            running[start(run)] = number
        pid, status = os.wait()
        codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    print(json.dumps(codes))


if __name__ == "__main__":
    main()
