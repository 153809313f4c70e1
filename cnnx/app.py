"""The Hydra application: compose → build through the registry → train → track.

``run(cfg)`` is the whole job and returns the sweep objective; ``task`` is its Hydra entry,
which ``cnnx.cli`` wraps so that errors reach the user as one line.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import re
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from cnnx import config_store_sharing, objective_direction, registry
from cnnx.cli import one_line_warnings
from cnnx.component_check import SUPPLIED
from cnnx.config_schema import added_key_problem, added_top_level_keys, close_key, unused_top_level_keys
from cnnx.config_schema import register as register_schema
from cnnx.data.image_files import LargeImageWarning
from cnnx.data.splits import check_loaded, check_seed
from cnnx.engine.grad_mode import no_grad
from cnnx.engine.losses.base import ProbabilitiesAsLogitsWarning
from cnnx.engine.model import Model, build_model
from cnnx.engine.parameter import Parameter
from cnnx.errors import CnnxError, ConfigError, PluginError, ReportedInputError
from cnnx.override_text import override_key, override_key_value
from cnnx.plugin_configs import CNNX_CONFIG_NAME, CNNX_VERSION_BASE
from cnnx.plugin_layers import check_plugin_layers
from cnnx.plugin_optimizers import check_plugin_optimizer
from cnnx.training.class_weights import with_class_weights
from cnnx.training.console import ConsoleLogger
from cnnx.training.divergence import UpdateGuard
from cnnx.training.early_stopping import EarlyStopping
from cnnx.training.signals import FINISHED_RUN_SIGNALS, TrainingInterrupted, hand_over
from cnnx.training.trainer import COUNTS, MONITORABLE, Trainer, check_count

register_schema()
config_store_sharing.install()
objective_direction.register_resolver()

#: The run's own lines; Hydra's job logging (conf/hydra/job_logging/cnnx.yaml) sends them to
#: stdout and to the run directory's log file.
RUN_LOG = logging.getLogger("cnnx.run")


def _options(section: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k != "type"}


def _component_type(section: Any, key: str, components: registry.Registry) -> str:
    if not isinstance(section, dict) or "type" not in section:
        raise ConfigError(
            f"{key} needs a 'type' naming a registered {components.kind}; available: "
            f"{', '.join(components.names())}"
        )
    return section["type"]


def check_output_size(model: Model, num_classes: int, loss_type: str) -> None:
    """Fail before training when the last layer cannot produce one score per class."""
    out = model.output_shape
    last = next(reversed(model.layers))
    binary_ok = num_classes == 2 and out == (1,)
    if len(out) != 1 or (out[0] != num_classes and not binary_ok):
        expected = "1 (binary) or 2" if num_classes == 2 else str(num_classes)
        raise ConfigError(
            f"model.layers.{last} outputs shape {out}, but dataset has {num_classes} classes; "
            f"expected {expected} outputs (set the last dense layer's out_features)"
        )
    if loss_type == "bce" and out != (1,):
        raise ConfigError(f"loss bce needs one output per sample, model.layers.{last} gives {out}")
    if loss_type == "cross_entropy" and out == (1,):
        raise ConfigError(
            f"loss cross_entropy needs one output per class (2 here), model.layers.{last} gives (1,); "
            f"use loss=bce for a single output, or give the last dense layer out_features=2"
        )


def _probe_loss(loss, model: Model, data, label: str) -> None:
    """Run the loss on two training samples, so that a plugin loss that breaks the contract is
    named before training, as plugin layers are (``check_plugin_layers``)."""
    x, y = data.train[0][:2], data.train[1][:2]
    try:
        with no_grad():
            outputs = model.forward(x, training=False)
        with one_line_warnings(ProbabilitiesAsLogitsWarning):
            _, grad = loss(outputs, y)
    except PluginError as error:  # the contract's check in Loss.__call__, named by the class's name
        raise PluginError(f"{label}: {str(error).removeprefix(f'{loss.name}: ')}") from None
    except CnnxError:  # the data's fault, already one line (labels out of range, say)
        raise
    except Exception as exc:  # noqa: BLE001 — a plugin's crash is the plugin's, named as such
        raise PluginError(f"{label} fails on two training samples: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())}") from exc
    dtype = getattr(grad, "dtype", None)
    if dtype != outputs.dtype:  # a float64 gradient would make every backward float64
        raise PluginError(f"{label}: the gradient is {dtype or type(grad).__name__} for {outputs.dtype} outputs; "
                          f"expected {outputs.dtype} (cnnx runs in float32: cast with .astype(np.float32, copy=False))")


def _check_monitor(key: str, monitor: Any) -> None:
    # Checked before training: a typo would otherwise surface only once the run is over.
    if monitor not in MONITORABLE:
        raise ConfigError(f"{key}={monitor!r} is not a metric the trainer records; accepted: {', '.join(MONITORABLE)}")


def build_run(config: dict[str, Any], callbacks: list | None = None):
    """Everything a run needs, built and validated; nothing is trained or logged yet."""
    seed = config["seed"]
    check_seed("seed", seed)  # the datasets' seed follows it; checked here to name the key typed
    model_seq, _ = np.random.SeedSequence([seed, 0]).spawn(2)
    dataset_cfg = config["dataset"]
    dataset_type = _component_type(dataset_cfg, "dataset", registry.datasets)
    with one_line_warnings(LargeImageWarning):
        data = check_loaded(registry.datasets.create(dataset_type, _options(dataset_cfg), "dataset"),
                            registry.datasets.label(dataset_type))
    model = build_model(config["model"]["layers"], data.input_shape, rng=np.random.default_rng(model_seq))
    check_plugin_layers(model, config["model"]["layers"])
    loss_cfg = config["loss"]
    loss_type = _component_type(loss_cfg, "loss", registry.losses)
    loss_options = with_class_weights(_options(loss_cfg), data, RUN_LOG.info)
    loss = registry.losses.create(loss_type, loss_options, "loss")
    check_output_size(model, data.num_classes, loss_type)
    _probe_loss(loss, model, data, registry.losses.label(loss_type))
    opt_cfg = config["optimizer"]
    opt_type = _component_type(opt_cfg, "optimizer", registry.optimizers)
    optimizer = registry.optimizers.create(opt_type, _options(opt_cfg), "optimizer",
                                           named_parameters=list(model.named_parameters()))
    if "params" not in vars(optimizer):  # else it fails at the first step, an epoch's data loaded
        raise PluginError(f"{registry.optimizers.label(opt_type)}: {type(optimizer).__name__}.__init__ must call "
                          f"super().__init__(named_parameters, lr) (Optimizer sets up params, lr and state there)")
    check_plugin_optimizer(opt_type, _options(opt_cfg), model)
    trainer_cfg = config["trainer"]
    sched_cfg = config["scheduler"]
    sched_type = _component_type(sched_cfg, "scheduler", registry.schedulers)
    # Option names are checked now; the scheduler itself needs the number of steps per epoch.
    registry.schedulers.check(sched_type, _options(sched_cfg), "scheduler", *SUPPLIED["scheduler"])
    _check_warmup(_options(sched_cfg).get("warmup_epochs"), trainer_cfg["epochs"])

    def make_scheduler(steps_per_epoch: int):
        return registry.schedulers.create(
            sched_type, _options(sched_cfg), "scheduler",
            optimizer=optimizer, epochs=trainer_cfg["epochs"], steps_per_epoch=steps_per_epoch,
        )

    # The console goes last: a callback that refuses to start (an unreachable store, a bad
    # checkpoint) then fails before anything is printed, so the error stays one line.
    callbacks = [*(callbacks or []), ConsoleLogger()]
    stopping = trainer_cfg["early_stopping"]
    _check_monitor("trainer.monitor", trainer_cfg["monitor"])
    # Checked even when off: setting its mode or patience says the user expects it to act.
    _check_monitor("trainer.early_stopping.monitor", stopping["monitor"])
    early_stopping = EarlyStopping(**{k: v for k, v in stopping.items() if k != "enabled"})
    if stopping["enabled"]:
        callbacks.insert(0, early_stopping)
    trainer = Trainer(
        model, loss, optimizer,
        epochs=trainer_cfg["epochs"], batch_size=trainer_cfg["batch_size"], seed=seed,
        scheduler_factory=make_scheduler, callbacks=callbacks,
        max_shift=trainer_cfg["augment"]["max_shift"],
        eval_batch_size=trainer_cfg["eval_batch_size"], progress=trainer_cfg["progress"], log=RUN_LOG.info,
        update_guard=UpdateGuard(trainer_cfg.get("on_nonfinite", "stop"), trainer_cfg.get("grad_clip_norm")),
    )
    return data, trainer


def short_overrides(overrides: list[str], keep_presets: bool = False, swept: Collection[str] = ()) -> list[str]:
    """``model.layers.conv1.out_channels=16`` → ``conv1.out_channels=16``; where and how runs are
    logged or executed is left out, and presets too unless ``keep_presets`` (a sweep's parent names them)
    or a sweep varies them (``swept``). Keys that would read the same keep as much of their
    path as tells them apart: ``seed=1,dataset.seed=2``."""
    presets = ("experiment", "hparams")
    kept = []
    for override in overrides:
        key, value = override_key_value(override)
        if key == "trainer.resume" or key.startswith(("hydra", "sweep.", "tracking.")):
            continue
        if key in _HOW_IT_RUNS and key not in swept:
            continue
        if key in presets and not keep_presets and key not in swept:
            continue
        kept.append((key, value))
    names = _short_keys([key for key, _ in kept])
    return [f"{names[key]}={_short_value(value)}" for key, value in kept]


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Each key's last part (a model key's last two), lengthened from the end while another
    key shares it: ``trainer.early_stopping.enabled`` and ``trainer.checkpoint.enabled`` →
    ``early_stopping.enabled``, ``checkpoint.enabled``."""
    paths = {key: key.split(".") for key in keys}
    length = {key: min(len(parts), 2 if parts[0] == "model" or parts[-1] in _VAGUE_NAMES else 1)
              for key, parts in paths.items()}
    while True:
        owners: dict[str, set[str]] = {}
        for key, parts in paths.items():
            owners.setdefault(".".join(parts[-length[key]:]), set()).add(key)
        clashing = [key for shared in owners.values() if len(shared) > 1 for key in shared
                    if length[key] < len(paths[key])]
        if not clashing:
            return {key: ".".join(parts[-length[key]:]) for key, parts in paths.items()}
        for key in clashing:
            length[key] += 1


#: Settings of how a run executes, not of what it trains: ``trainer.blas_threads=null``, which
#: the README advises for every SLURM or Ray job, named no job apart from the others.
_HOW_IT_RUNS = {"trainer.blas_threads", "trainer.progress"}

#: Last parts that say nothing alone: ``enabled=false`` does not say what it turns off.
_VAGUE_NAMES = {"enabled", "type", "name", "mode", "dir", "path"}


def _short_value(value: str) -> str:
    """``0.033175532177089365`` (a float Optuna drew, printed in full) → ``0.03318``; Hydra's
    ``False`` as typed, ``false`` (a parent names its command as typed, a job as Hydra rendered
    it); a value as short as people type stays as it is."""
    value = re.sub(r"(?<![\w'\"])(True|False)(?![\w'\"])", lambda found: found.group(1).lower(), value)
    if len(value) <= 10 or "." not in value:
        return value
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def run_name_from_overrides(overrides: list[str], config: dict[str, Any], swept: Collection[str] = ()) -> str:
    """``conv1.out_channels=16,lr=0.1``: what distinguishes this run, readable in MLflow's list."""
    shown = short_overrides(overrides, swept=swept)
    return ",".join(shown) if shown else f"{config['model']['name']}-seed{config['seed']}"


def logged_in(config: dict[str, Any], sweep=None) -> str:
    """The MLflow experiment of a run: a sweep's jobs all log into their parent's, also when
    they are of presets that name others."""
    if sweep is not None and sweep.experiment_name is not None:
        return sweep.experiment_name
    return config["tracking"]["experiment_name"] or config["experiment_name"]


def _checkpoint(config: dict[str, Any], output_dir: str | None, continue_in: Path | None = None, sweep=None):
    """The checkpoint callback, or None when checkpoints are off or have nowhere to go.

    ``continue_in``: the checkpoints of an earlier attempt of this sweep job, which it resumes
    from and goes on writing to, so that its run keeps one checkpoint directory.
    """
    from cnnx.training.checkpoint import Checkpoint, list_checkpoints

    trainer_cfg = config["trainer"]
    settings = trainer_cfg.get("checkpoint") or {"enabled": False}
    resume = True if continue_in is not None else trainer_cfg.get("resume", False)
    directory = continue_in or settings.get("dir") or (Path(output_dir) / "checkpoints" if output_dir else None)
    if not settings["enabled"] or directory is None:
        if resume is not False:
            raise ConfigError(
                f"trainer.resume={resume} needs checkpoints: set trainer.checkpoint.enabled=true"
                + ("" if directory else " and trainer.checkpoint.dir")
            )
        return None
    earlier = list_checkpoints(Path(directory)) if resume is False else []
    if earlier and sweep is not None and config["sweep"]["resume"] and not settings.get("dir"):
        # A resumed sweep numbers its jobs in the order its values are typed, which may differ
        # from the first attempt's: this job's folder can hold another job's checkpoints (which
        # that job may be continuing from right now). They stay; this run writes beside them.
        taken, directory = Path(directory), _free_checkpoint_folder(Path(directory))
        print(f"cnnx: {taken} holds another run's checkpoints (a job numbered otherwise in an earlier attempt); "
              f"this run writes its own beside it, to {directory.name}", file=sys.stderr)
        earlier = []
    if earlier:
        raise ConfigError(_earlier_checkpoints(earlier[-1], config, output_dir, sweep))
    checkpoint = Checkpoint(
        directory, every_n_epochs=settings["every_n_epochs"], keep_last=settings["keep_last"],
        keep_best=settings["keep_best"], monitor=trainer_cfg["monitor"], resume=resume,
        config=resumable_config(config), may_change=resumable_keys_shown(config),
        classifier_description=functools.partial(_classifier_description, config),
    )
    resumed = checkpoint.resume_file
    if resumed is not None and resumed.parent.resolve() != Path(directory).resolve():
        # Resumed from another run's folder into this one: a new run's rule holds here.
        earlier = list_checkpoints(Path(directory))
        if earlier:
            raise ConfigError(_earlier_checkpoints(earlier[-1], config, output_dir, sweep))
    elif checkpoint.resume_file_passed_by:
        raise ConfigError(_newer_checkpoints(checkpoint.resume_file_passed_by[-1], resume, config, output_dir, sweep))
    return checkpoint


def _classifier_description(config: dict[str, Any], trainer: Trainer) -> dict[str, Any] | None:
    from cnnx.inference import trained_classifier

    return None if trainer.data is None else trained_classifier(trainer.model, config, trainer.data).description()


def _free_checkpoint_folder(taken: Path) -> Path:
    """``checkpoints-2``, ``checkpoints-3``…: the first folder beside ``taken`` without checkpoints."""
    from cnnx.training.checkpoint import list_checkpoints

    return next(folder for n in itertools.count(2)
                if not list_checkpoints(folder := taken.with_name(f"{taken.name}-{n}")))


def _checkpoints_placed_by(config: dict[str, Any], output_dir: str | None, sweep) -> tuple[str, str, Path]:
    """(the setting that decides where a run's checkpoints go, how to show it, its directory)."""
    chosen = config["trainer"]["checkpoint"].get("dir")
    directory = Path(chosen or output_dir)
    if chosen:
        return "trainer.checkpoint.dir", f"'{directory}'", directory
    if sweep is not None:
        return "hydra.sweep.dir", f"job directory '{directory}'", directory
    return "hydra.run.dir", f"'{directory}'", directory


def _newer_checkpoints(newest: Path, resume: Any, config: dict[str, Any], output_dir: str | None, sweep) -> str:
    """Why a run resumed from an older checkpoint than its run's newest may not write beside
    them: it trains another trajectory from there, whose checkpoints the newer ones would
    outrank in ``trainer.resume=true`` and push out of ``keep_last``."""
    key, shown, directory = _checkpoints_placed_by(config, output_dir, sweep)
    return (f"{key}: {shown} holds checkpoints newer than trainer.resume={resume} (newest: "
            f"{_within(newest, directory)}), which a run resumed from it would prune and mix with its own; "
            f"continue from the newest with trainer.resume=true, or give the resumed run another {key}")


def _within(path: Path, directory: Path) -> Path:
    """``path`` from ``directory`` when it lies inside it; one may be relative (as typed in
    ``trainer.resume=``), the other absolute."""
    try:
        return path.resolve().relative_to(Path(directory).resolve())
    except ValueError:
        return path


def _earlier_checkpoints(newest: Path, config: dict[str, Any], output_dir: str | None, sweep) -> str:
    """Why a new run may not write where another run's checkpoints are: its retention
    (``keep_last``) would prune theirs, finished or not, and a later ``trainer.resume=true``
    could pick one of theirs over its own."""
    key, shown, directory = _checkpoints_placed_by(config, output_dir, sweep)
    if key == "trainer.checkpoint.dir":
        todo = ("leave it unset in a sweep, so that each job keeps its own" if sweep is not None else
                "resume that run with trainer.resume=true, or choose another trainer.checkpoint.dir")
    elif sweep is not None:
        todo = "choose another hydra.sweep.dir"
        if config["tracking"]["enabled"]:
            todo = f"continue that sweep with sweep.resume=true, or {todo}"
        else:
            # Tracking off: a job its launcher runs again (a SLURM requeue, a Ray retry) cannot
            # tell its earlier attempt's run apart, which only MLflow records.
            todo = (f"a job that its launcher runs again (a SLURM requeue, a Ray retry) continues its "
                    f"checkpoints only with tracking on; {todo}")
    else:
        todo = "resume that run with trainer.resume=true, or choose another hydra.run.dir"
    return (f"{key}: {shown} already holds checkpoints of an earlier run (newest: {_within(newest, directory)}), "
            f"which a new run there would prune and mix with its own; {todo}")


#: Settings a resumed run may change: how long it trains, how it is logged, where it runs. The
#: rest decide its numbers, so they must be the checkpoint's.
RESUMABLE_CHANGES = ("experiment_name", "model.name", "trainer.epochs", "trainer.eval_batch_size",
                     "trainer.progress", "trainer.checkpoint", "trainer.resume", "trainer.blas_threads",
                     "tracking", "sweep")


def resumable_config(config: dict[str, Any]) -> dict[str, str]:
    """The flattened settings a resumed run must share with its checkpoint."""
    from cnnx.tracking.mlflow_tracker import flatten

    return {key: value for key, value in flatten(config).items()
            if not any(key == prefix or key.startswith(prefix + ".") for prefix in RESUMABLE_CHANGES)}


def resumable_keys_shown(config: dict[str, Any]) -> tuple[str, ...]:
    """``RESUMABLE_CHANGES`` as a refusal names them to the user: a section as ``tracking.*``;
    ``trainer.resume`` and ``sweep`` go without saying."""
    def is_section(key: str) -> bool:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return isinstance(node, dict)

    return tuple(key + ".*" if is_section(key) else key for key in RESUMABLE_CHANGES
                 if key not in ("trainer.resume", "sweep"))


def _tracker(config: dict[str, Any], cfg: DictConfig, overrides: list[str], output_dir: str | None,
             sweep=None, checkpoint=None):
    from cnnx.tracking.mlflow_tracker import MlflowTracker
    from cnnx.tracking.sweep_job import tracker_options
    from cnnx.tracking.sweep_summary import overrides_tag
    from cnnx.tracking.tags import run_tags

    tracking = config["tracking"]
    flush_timeout = tracking["flush_timeout"]  # a float: the schema says so
    if not 0 <= flush_timeout < math.inf:
        raise ConfigError(f"tracking.flush_timeout={flush_timeout!r} is invalid; accepted: seconds >= 0")
    options = tracker_options(sweep, config, checkpoint.directory if checkpoint else None)
    arguments = dict(
        experiment_name=logged_in(config, sweep),
        config=config,
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        run_name=tracking["run_name"] or run_name_from_overrides(overrides, config, sweep.swept if sweep else ()),
        tracking_uri=options.get("tracking_uri", tracking["uri"]),
        tags={**run_tags(_launch_dir()), **options["tags"], **overrides_tag(overrides)},
        parent_run_id=options.get("parent_run_id"),
        log_kernels=tracking["log_kernels"],
        log_weights=tracking["log_weights"],
        spill_dir=Path(output_dir or ".") / "mlflow-unsent",
        flush_timeout=flush_timeout,
        log_plots=tracking["log_plots"],
        log_model=tracking["log_model"],
    )
    if checkpoint is not None and checkpoint.resume_file is not None:
        # Its run may have gone past it: whether this continues that run is the tracker's call.
        newer = checkpoint.resume_file_passed_by
        arguments.update(resume_file=str(checkpoint.resume_file.resolve()),
                         newer_checkpoint=str(newer[-1]) if newer else None)
    # A single run has a core to spare for tracking. A sweep's jobs either fill the cores
    # (parallel) or find MLflow already imported and its store open (sequential), where a
    # helper per job measured slower than none (README, "What you'll see in MLflow").
    background = tracking.get("background")
    if background if background is not None else sweep is None:
        from cnnx.tracking.background import BackgroundTracker

        return BackgroundTracker(arguments, config["model"]["layers"])  # checks a local store itself
    from cnnx.tracking.mlflow_tracker import resolve_tracking_uri
    from cnnx.tracking.store_check import check_local_store

    # Before the data loads, as with a tracking process; MLflow would say it only on its first
    # write, with a traceback.
    check_local_store(resolve_tracking_uri(arguments["tracking_uri"]))
    return MlflowTracker(**arguments)


def _launch_dir() -> str | None:
    """Where the command was started (a job with ``hydra.job.chdir=true`` runs elsewhere):
    its git commit is the one a run records."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.cwd if HydraConfig.initialized() else None


def check_settings(cfg: DictConfig, overrides: list[str], hydra_config: DictConfig | None,
                   swept: Collection[str] = ()) -> None:
    """The checks of a run's settings that need neither its data nor its model. A sweep makes
    them once before it starts (``cnnx.sweep_settings``) on the settings its jobs share, which
    every job would refuse alike; the keys it varies (``swept``) are left to each job."""
    unknown = added_key_problem(cfg)
    if unknown is not None:
        raise ConfigError(unknown)
    _refuse_unused_top_level_keys(cfg, overrides, hydra_config)
    _check_experiment_name(cfg, swept)
    for key in ("trainer.monitor", "trainer.early_stopping.monitor"):
        # None: an interpolation of a key only the sweep's jobs have (+m=val_acc,val_loss).
        monitor = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if key not in swept and monitor is not None:
            _check_monitor(key, monitor)
    # Two keys that presets and groups set: a sweep of presets or groups (a swept name that is no
    # key here, or a whole section) may give each job other values than these, unless the
    # command line sets both, which wins over any preset.
    absent = object()
    found = [OmegaConf.select(cfg, key, throw_on_resolution_failure=False, default=absent) for key in swept]
    varied_wholesale = any(value is absent or OmegaConf.is_config(value) for value in found)
    if not varied_wholesale:
        _check_values_jobs_share(cfg, swept)
    given = {override_key(override) for override in overrides}
    warmup_keys = {"scheduler.warmup_epochs", "trainer.epochs"}
    if (not varied_wholesale or warmup_keys <= given) and not warmup_keys & set(swept):
        _check_warmup(*(OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
                        for key in ("scheduler.warmup_epochs", "trainer.epochs")))


def _check_values_jobs_share(cfg: DictConfig, swept: Collection[str]) -> None:
    """The trainer's counts and the optimizer's options, when no job varies them: a sweep
    would otherwise log one FAILED run per job for a value every job refuses alike."""
    for key in COUNTS:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if key not in swept and value is not None:
            check_count(key, value)
    if any(key == "optimizer" or key.startswith("optimizer.") for key in swept):
        return
    try:
        section = OmegaConf.to_container(OmegaConf.select(cfg, "optimizer"), resolve=True)
        opt_type = section["type"]
    except Exception:  # noqa: BLE001 — a missing or unresolvable section is for the checks that own it
        return
    if opt_type not in registry.optimizers.names():
        return  # named by the run's own check, with the names available
    probe = [("probe", Parameter(np.zeros(1, np.float32)))]
    try:
        registry.optimizers.create(opt_type, _options(section), "optimizer", named_parameters=probe)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 — a plugin's other failures are named when the run builds it
        pass


def _check_experiment_name(cfg: DictConfig, swept: Collection[str]) -> None:
    """An empty experiment name, which MLflow refuses only when the run is created, blaming the
    store. ``tracking.experiment_name`` overrides ``experiment_name`` when set (``logged_in``)."""
    if OmegaConf.select(cfg, "tracking.enabled", default=True, throw_on_resolution_failure=False) is False:
        return
    keys = ("tracking.experiment_name", "experiment_name")
    values = [OmegaConf.select(cfg, key, throw_on_resolution_failure=False, default=None) for key in keys]
    if set(keys) & set(swept):
        return  # each job checks its own
    if values[0] == "":  # null means experiment_name's; '' fell back to it silently
        raise ConfigError("tracking.experiment_name='' is empty; expected the name of the MLflow experiment to "
                          "log to, or null to log to experiment_name's")
    if values[0] or values[1] != "":
        return  # a name, or something other checks own (a missing key, an unresolved interpolation)
    raise ConfigError("experiment_name='' is empty; expected the name of the MLflow experiment to log to")


def _check_warmup(warmup: Any, epochs: Any) -> None:
    """A warm-up longer than the run, named by the keys the user sets: the scheduler's own
    error can only call the schedule's length "epochs". Other problems with either value are
    left to the checks that own it (trainer.epochs=-1 is about the epochs, not the warm-up)."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (warmup, epochs))
    if numbers and isinstance(epochs, int) and epochs >= 1 and warmup > epochs:
        raise ConfigError(f"scheduler.warmup_epochs={warmup} is longer than the run, trainer.epochs={epochs}; "
                          f"accepted: 0 <= scheduler.warmup_epochs <= trainer.epochs")


def _refuse_unused_top_level_keys(cfg: DictConfig, overrides: list[str], hydra_config: DictConfig | None) -> None:
    """Only keys the command line added: a preset file may keep notes at its top level."""
    added = added_top_level_keys(overrides)
    if not added:
        return
    unused = unused_top_level_keys(cfg, hydra_config)
    stray = [key for key in unused if key in added]
    if not stray:
        return
    key = stray[0]
    value = cfg._get_node(key)._value() if not isinstance(cfg[key], DictConfig) else "..."
    guess = close_key(key)
    hint = ""
    if guess is not None:
        hint = f"; did you mean {'' if guess in cfg else '+'}{guess}={value}?"
    raise ConfigError(f"unknown config key {key} (added with +{key}={value}): nothing refers to it "
                      f"as ${{{key}}}{hint}")


def run(cfg: DictConfig, overrides: list[str] | None = None, output_dir: str | None = None,
        sweep=None) -> float:
    """One training run; ``output_dir`` (Hydra's run dir) holds its checkpoints, ``sweep`` (a
    ``SweepJob``) is set when it is a job of a multirun."""
    from cnnx.tracking.sweep_job import failure_recorded

    tracked = OmegaConf.select(cfg, "tracking.enabled", default=True, throw_on_resolution_failure=False)
    with failure_recorded(sweep, overrides or [], tracked is not False) as progress:
        return _run(cfg, overrides, output_dir, sweep, progress)


def _run(cfg: DictConfig, overrides: list[str] | None, output_dir: str | None, sweep, progress) -> float:
    from hydra.core.hydra_config import HydraConfig

    from cnnx.blas_threads import limit_blas_threads, run_blas_threads
    from cnnx.tracking.sweep_job import earlier_attempt

    check_settings(cfg, overrides or [], HydraConfig.get() if HydraConfig.initialized() else None)
    if sweep is None and OmegaConf.select(cfg, "sweep.resume", default=False) is True:
        # Ignoring it would start the fresh run that the user meant to avoid.
        raise ConfigError("sweep.resume=true resumes sweeps (-m); a single run continues with trainer.resume=true")
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    attempt = earlier_attempt(sweep, config, logged_in(config, sweep), output_dir)
    if attempt.objective is not None:
        return attempt.objective
    if sweep is not None and sweep.parallel and config["trainer"]["progress"] is None:
        # Parallel jobs' progress bars would redraw over each other on the one terminal; their
        # epoch lines, tagged with the job, say as much.
        config["trainer"]["progress"] = False
    threads = run_blas_threads(config["trainer"]["blas_threads"], sweep.blas_threads if sweep else None)
    with limit_blas_threads(threads):
        # The checkpoint callback precedes the tracker: it restores the run id before the
        # tracker starts, and writes each epoch's checkpoint before the tracker logs that epoch.
        checkpoint = _checkpoint(config, output_dir, attempt.checkpoint_dir, sweep)
        callbacks = [checkpoint]
        if config["tracking"]["enabled"]:
            callbacks.append(_tracker(config, cfg, overrides or [], output_dir, sweep, checkpoint))
        data, trainer = build_run(config, [c for c in callbacks if c is not None])
        progress.training = True  # from here on the job's own run records what happens
        if sweep is None:
            FINISHED_RUN_SIGNALS.install()
        try:
            trainer.fit(data)
        except KeyboardInterrupt as interruption:  # TrainingInterrupted, or a second Ctrl-C
            interruption.run_dir, interruption.in_sweep = output_dir, sweep is not None
            interruption.sweep_tracked = config["tracking"]["enabled"]
            interruption.checkpoints_off = checkpoint is None
            if isinstance(interruption, TrainingInterrupted):
                hand_over(trainer.interrupts)
            raise
        except Exception as failure:
            # A signal while the failed job cleaned up (its MLflow run ended FAILED, with its
            # error) stops the sweep too, rather than waiting for the next job to be killed.
            _stop_the_sweep_if_signalled(sweep, trainer, output_dir, "failing", failure)
            raise
        FINISHED_RUN_SIGNALS.finished = sweep is None
    # A signal while this job was finishing: its run is complete, and the sweep stops before
    # the next job, as it does for a Ctrl-C between jobs.
    _stop_the_sweep_if_signalled(sweep, trainer, output_dir, "finishing")
    if sweep is None and output_dir:
        # Where checkpoints/, app.log and .hydra/ are: what trainer.resume and cnnx predict
        # --weights need (a sweep's summary names its jobs' directories instead).
        RUN_LOG.info(f"run directory: {_shown_path(output_dir)}")
    monitor = config["trainer"]["monitor"]
    objective, key = trainer.objective(monitor), trainer.objective_key(monitor)
    # Without a validation split the figure is a training one: labelled as what it is.
    RUN_LOG.info(f"{key} (best epoch) = {objective:.4f}" + (f" (no validation split for {monitor})" if key != monitor else ""))
    return objective


def _stop_the_sweep_if_signalled(sweep, trainer, output_dir: str | None, doing: str,
                                  cause: BaseException | None = None) -> None:
    """Raise ``StoppedBySignal`` when a signal came while a sweep's job was ``doing`` its end.
    Not in a submitit job: its signal was for it alone (SLURM's scancel, preemption or time
    limit), and a job that raised would leave submitit no result, read as a lost job."""
    if sweep is None or sweep.own_process_signals or not trainer.interrupts.stops_the_sweep:
        return
    from cnnx.training.signals import StoppedBySignal

    name = trainer.interrupts.signal_name
    raise StoppedBySignal(name, f"{name} received while job {output_dir} was {doing}") from cause


def _shown_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, as Hydra's default
    ``outputs/DATE/TIME`` does, else absolute (``hydra.job.chdir=true`` makes it the working
    directory itself, which "." would not name)."""
    try:
        resolved, here = Path(path).resolve(), Path.cwd().resolve()
        return os.path.relpath(resolved, here) if resolved != here and resolved.is_relative_to(here) else str(resolved)
    except (OSError, ValueError):
        return path


@hydra.main(version_base=CNNX_VERSION_BASE, config_path="conf", config_name=CNNX_CONFIG_NAME)
def task(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from hydra.types import RunMode

    from cnnx.cli import one_line
    from cnnx.plugin_configs import warn_shadowed_choices
    from cnnx.tracking.sweep_job import current_sweep_job

    hydra_config = HydraConfig.get()
    warn_shadowed_choices(hydra_config)
    # submitit's jobs log through a handler of their own: passed on to Hydra's as well, each of
    # its lines came twice in a job's console log, and into the job's app.log of cnnx's lines.
    logging.getLogger("submitit").propagate = False
    sweep = current_sweep_job(hydra_config)
    try:
        return run(cfg, list(hydra_config.overrides.task), hydra_config.runtime.output_dir, sweep)
    except Exception as error:
        # In a sweep, Hydra's line naming the failing job's overrides is worth keeping.
        if hydra_config.mode == RunMode.RUN and one_line(error) is not None:
            raise ReportedInputError(error) from error
        if sweep is not None and sweep.parallel:
            # The job's own log says why it failed: on SLURM its process still exits 0 (Hydra
            # hands the error to the sweep), and the sweep's console may be long gone. (A job in
            # the sweep's own process has the sweep's line in its log already.)
            from cnnx.cli import OUTCOME_LOG

            OUTCOME_LOG.error(f"cnnx: error: {one_line(error) or f'{type(error).__name__}: {error}'}")
        raise
