"""How a sweep's jobs find their parent MLflow run, whichever launcher runs them.

The multirun callback writes one small JSON file into the sweep directory before any job
starts, and every job reads it. Hydra's launchers already need that directory to be shared
with their jobs (jobs write their outputs there, submitit pickles its jobs there), so the
file reaches joblib workers, submitit processes on SLURM nodes and Ray workers alike, which
the launching process's memory or environment would not.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnx.cache_dir import write_atomically

LINK_FILE = "mlflow_sweep.json"


@dataclass(frozen=True)
class SweepLink:
    #: absolute, so jobs reach the parent's store whatever their working directory
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    #: The parent's experiment, where every job logs, also jobs of presets that name another
    #: (``+experiment=lenet,digits_small``); None in links written before it was recorded.
    experiment_name: str | None = None
    #: The keys the sweep varies: a swept preset is named in its jobs' run names.
    swept: tuple[str, ...] = ()

    def write(self, sweep_dir: Path, replaceable: Callable[[SweepLink], bool] = lambda other: True) -> Path:
        """Claim ``sweep_dir`` for this sweep's jobs. A link another sweep left there is replaced
        only when ``replaceable(it)`` (that sweep has ended); else ``SweepDirTaken``: two sweeps
        started in the same second share Hydra's default sweep dir, and every job of both would
        read whichever link was written last."""
        sweep_dir.mkdir(parents=True, exist_ok=True)
        path = sweep_dir / LINK_FILE
        text = json.dumps(asdict(self), indent=1).encode()
        claim = path.with_name(f".{LINK_FILE}.{uuid.uuid4().hex}")
        write_atomically(claim, lambda stream: stream.write(text))  # a job never reads half a file
        try:
            try:
                os.link(claim, path)  # atomic, and only where no sweep has claimed the folder yet
                return path
            except FileExistsError:
                other = SweepLink.read(sweep_dir)
                if other is not None and other.parent_run_id != self.parent_run_id and not replaceable(other):
                    raise SweepDirTaken(other) from None
            except OSError:
                pass  # a filesystem without hard links: replaced, as on any other
            os.replace(claim, path)
            return path
        finally:
            claim.unlink(missing_ok=True)

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepLink | None:
        path = sweep_dir / LINK_FILE
        if not path.exists():
            return None
        fields = json.loads(path.read_text())
        return cls(**{**fields, "swept": tuple(fields.get("swept", ()))})


class SweepDirTaken(Exception):
    """The sweep dir holds the link of another sweep, still running."""

    def __init__(self, other: SweepLink) -> None:
        super().__init__(other.parent_run_id)
        self.other = other


def sweep_dir_of(hydra_cfg: Any) -> Path:
    """The sweep directory as an absolute path, from the launching process's working directory."""
    return Path(hydra_cfg.runtime.cwd) / str(hydra_cfg.sweep.dir)
