"""Structured configs: Hydra validates every composed run against these before training.

Groups whose options depend on the chosen plugin (model layers, dataset, optimizer, loss,
scheduler) are open mappings here; their option names are checked against the plugin's own
signature when it is built, still before training starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    layers: dict[str, Any] = MISSING


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "${..monitor}"  # trainer.monitor: see conf/trainer/default.yaml
    mode: str = "auto"
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True


@dataclass
class AugmentConfig:
    max_shift: int = 0


@dataclass
class CheckpointConfig:
    enabled: bool = True
    every_n_epochs: int = 1
    keep_last: int = 2
    keep_best: bool = True
    # null: <hydra run dir>/checkpoints
    dir: Optional[str] = None


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 64
    monitor: str = "val_acc"
    progress: Optional[bool] = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # false, true (the newest checkpoint of this run directory) or a checkpoint file/directory
    resume: Any = False
    on_nonfinite: str = "stop"
    grad_clip_norm: Optional[float] = None
    blas_threads: Optional[int] = 1


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None
    experiment_name: Optional[str] = None
    run_name: Optional[str] = None
    log_kernels: bool = True
    log_weights: bool = True
    flush_timeout: float = 60.0
    log_plots: bool = True
    log_model: bool = True
    # null: in a helper process for single runs, in the job's own process for sweep jobs
    background: Optional[bool] = None


@dataclass
class SweepConfig:
    # rerun a multirun, skipping jobs whose run already FINISHED under the same sweep parent
    resume: bool = False
    # joblib launcher: fork the workers with the imports done (null: yes on Linux)
    fork_workers: Optional[bool] = None


@dataclass
class CnnxConfig:
    experiment_name: str = "cnnx"
    seed: int = 0
    model: ModelConfig = MISSING
    dataset: dict[str, Any] = MISSING
    optimizer: dict[str, Any] = MISSING
    loss: dict[str, Any] = MISSING
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "constant"})
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


def keys_outside_the_schema(cfg: Any, prefix: str = "") -> list[tuple[str, list[str]]]:
    """``(key, accepted keys)`` for each key a ``+key=value`` override added to a section the
    schema describes (``trainer``, ``tracking``, ``sweep``, ``model``, …).

    Hydra's ``+`` adds a key even where the schema would reject it, and nothing reads the
    added key: ``+trainer.epoch=5`` would train for the default epochs without a word. Keys
    added at the top level are left to ``unused_top_level_keys``: they may be variables for
    interpolation.
    """
    from omegaconf import DictConfig, OmegaConf

    found = []
    schema = OmegaConf.get_type(cfg)
    fields = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in cfg.keys():
        if fields is not None and prefix and key not in fields:
            found.append((f"{prefix}{key}", fields))
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            found.extend(keys_outside_the_schema(node, f"{prefix}{key}."))
    return found


def added_key_problem(cfg: Any, prefix: str = "", passed_on: tuple[str, ...] = ()) -> str | None:
    """The first of ``keys_outside_the_schema``, in the one line that refuses it.

    ``passed_on``: keys of ``cfg`` itself that its consumer takes although the schema does not
    list them (a launcher's keyword arguments for the library under it).
    """
    unknown = [(key, accepted) for key, accepted in keys_outside_the_schema(cfg, prefix)
               if key not in {f"{prefix}{name}" for name in passed_on}]
    if not unknown:
        return None
    key, accepted = unknown[0]
    if key.count(".") == prefix.count("."):
        accepted = [*accepted, *passed_on]
    shown = [name for name in accepted if not name.startswith("_")]  # _target_: the plugin's class, not a setting
    return f"unknown config key {key} (added with +{key}); accepted keys here: {', '.join(shown) or 'none'}"


def added_top_level_keys(overrides: list[str]) -> set[str]:
    """The top-level keys that command-line overrides add (``+key=value``, ``++key=value``)."""
    keys = (override.lstrip("+").split("=", 1)[0] for override in overrides if override.startswith("+"))
    return {key for key in keys if key and "." not in key and "/" not in key}


def unused_top_level_keys(cfg: Any, *others: Any) -> list[str]:
    """Keys outside the schema at the top level that nothing refers to, in ``cfg`` or in
    ``others`` (Hydra's own config): ``+experiement=lenet`` would otherwise train the default
    model without a word. Such a key is fine as a variable (``+base_lr=0.1
    optimizer.lr=${base_lr}``)."""
    from omegaconf import OmegaConf

    outside = [key for key in cfg.keys() if key not in _schema_keys()]
    if not outside:
        return []
    # Unresolved YAML keeps every interpolation as written.
    text = "\n".join(OmegaConf.to_yaml(c) for c in (cfg, *others) if c is not None)
    interpolations = re.findall(r"\$\{[^\n]*\}", text)
    return [key for key in outside
            if not any(re.search(rf"(?<![\w.]){re.escape(str(key))}\b", found) for found in interpolations)]


def close_key(key: str) -> str | None:
    """The schema's top-level key or cnnx config group that ``key`` most likely misspells."""
    from importlib.resources import files

    groups = [entry.name for entry in files("cnnx.conf").iterdir() if entry.is_dir() and entry.name != "hydra"
              and not entry.name.startswith("_")]
    matches = difflib.get_close_matches(key, _schema_keys() + groups, n=1)
    return matches[0] if matches else None


def _schema_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(CnnxConfig)]


def register() -> None:
    store = ConfigStore.instance()
    store.store(name="cnnx_schema", node=CnnxConfig)
