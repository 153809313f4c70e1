"""The console lines of a sweep's jobs name their job: ``[#3] epoch 2/20 ...``.

Parallel jobs (joblib, submitit_local) share the terminal, so without a tag their lines mix
beyond telling apart. Each job's own log file (``<run dir>/app.log``) needs no tag, and a single
run's console gets none. Hydra builds the formatter from ``conf/hydra/job_logging/cnnx.yaml``
with the job's number (``hydra.job.num``, unset outside multiruns).
"""

from __future__ import annotations

import logging


class JobLineFormatter(logging.Formatter):
    def __init__(self, fmt: str | None = None, datefmt: str | None = None, job: int | None = None) -> None:
        super().__init__(fmt, datefmt)
        self.tag = "" if job is None else f"[#{job}] "

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.tag:
            return text
        # A model summary is one record of many lines; each gets the tag, as each can end up
        # between another job's lines.
        return "\n".join(self.tag + line for line in text.split("\n"))
