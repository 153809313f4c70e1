"""How a sweep's jobs find their parent MLflow run, whichever launcher runs them.

The multirun callback writes one small JSON file into the sweep directory before any job
starts, and every job reads it. Hydra's launchers already need that directory to be shared
with their jobs (jobs write their outputs there, submitit pickles its jobs there), so the
file reaches joblib workers, submitit processes on SLURM nodes and Ray workers alike, which
the launching process's memory or environment would not.
"""

from __future__ import annotations

import json
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

    def write(self, sweep_dir: Path) -> Path:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        path = sweep_dir / LINK_FILE
        text = json.dumps(asdict(self), indent=1)
        write_atomically(path, lambda stream: stream.write(text.encode()))  # a job never reads half a file
        return path

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepLink | None:
        path = sweep_dir / LINK_FILE
        if not path.exists():
            return None
        fields = json.loads(path.read_text())
        return cls(**{**fields, "swept": tuple(fields.get("swept", ()))})


def sweep_dir_of(hydra_cfg: Any) -> Path:
    """The sweep directory as an absolute path, from the launching process's working directory."""
    return Path(hydra_cfg.runtime.cwd) / str(hydra_cfg.sweep.dir)
