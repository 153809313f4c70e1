"""A multirun's launcher, sweeper and swept values, checked before the sweep starts.

Hydra's launchers and sweepers check their settings only once the sweep runs, and report a
bad one as a library's traceback (joblib's "n_jobs == 0 in Parallel has no meaning",
Optuna's "Please set either 'minimize' or 'maximize' to direction"). A swept value that
expands to nothing (``optimizer.lr=range(0.1,0.1)``) runs no job and exits 0, as if the
sweep had worked. This Hydra callback runs first among the sweep's callbacks
(``hydra.callbacks`` in conf/config.yaml), before any MLflow run exists.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cnnx.fork_workers import joblib_launcher
from cnnx.launcher_kind import launcher_kind

OPTUNA_DIRECTIONS = ("minimize", "maximize")
#: What the joblib launcher passes on to loky although its config does not list it: joblib's
#: Parallel takes any keyword and drops those loky does not read, so only these are settings.
LOKY_SETTINGS = ("idle_worker_timeout",)

#: Whether the multirun of this process logs to MLflow and checkpoints its jobs; read when it
#: is interrupted, to say how it can go on (only MLflow knows which of its jobs finished, and
#: only checkpoints let a stopped one continue).
_tracked: bool | None = None
_checkpointed: bool | None = None


def sweep_is_tracked() -> bool:
    return bool(_tracked)


def sweep_is_checkpointed() -> bool:
    return bool(_checkpointed)


def _parsed(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides)


def _empty_sweep(parsed: list) -> str | None:
    for override in parsed:
        if not override.is_sweep_override():
            continue
        try:
            values = list(override.sweep_iterator())
        except Exception:  # noqa: BLE001 — interval() and glob(): the sweeper enumerates those
            continue
        if not values:
            return (f"{override.input_line} sweeps over no value; accepted: a range whose stop "
                    f"lies beyond its start (range(0.1,0.4,0.1)), or a list of values (0.1,0.2)")
    return None


#: The tags Hydra's Optuna sweeper reads on an interval; it ignores any other.
INTERVAL_TAGS = ("log",)


def _interval_problem(parsed: list) -> str | None:
    """A search interval Optuna would refuse mid-sweep with a traceback, or whose tag it would
    silently ignore (``tag(lg, ...)`` samples on a linear scale)."""
    from hydra.core.override_parser.types import IntervalSweep

    for override in parsed:
        interval = override.value()
        if not isinstance(interval, IntervalSweep):
            continue
        line = override.input_line
        unknown = sorted(set(interval.tags) - set(INTERVAL_TAGS))
        if unknown:
            return f"{line}: unknown tag {unknown[0]!r}; accepted: {', '.join(INTERVAL_TAGS)} (tag(log, interval(...)))"
        if interval.start > interval.end:
            return (f"{line}: the interval's low end is above its high end; accepted: interval(LOW, HIGH) "
                    f"with LOW <= HIGH")
        if "log" in interval.tags and interval.start <= 0:
            return (f"{line}: a log-scale interval must start above 0; accepted: tag(log, interval(LOW, HIGH)) "
                    f"with LOW > 0")
    return None


def _swept(config: DictConfig) -> list[str]:
    """The keys the sweep varies: its sweep overrides and its sweeper's search space."""
    from cnnx.tracking.sweep_callback import search_space
    from cnnx.tracking.sweep_summary import swept_keys_of_command

    return swept_keys_of_command(list(config.hydra.overrides.task), search_space(config))


def _direction_problem(config: DictConfig, directions: list[str]) -> str | None:
    """An Optuna direction that leads away from the runs cnnx calls best (``objective_direction``)."""
    from cnnx.objective_direction import direction_of

    monitor = OmegaConf.select(config, "trainer.monitor", throw_on_resolution_failure=False)
    if monitor is None:  # an interpolation of a key only the jobs have: each job checks its own
        return None
    wanted = direction_of(monitor)
    if len(directions) != 1:
        return (f"hydra.sweeper.direction=[{','.join(directions)}] asks for {len(directions)} objectives, and a "
                f"cnnx trial returns one, trainer.monitor={monitor}; accepted: hydra.sweeper.direction={wanted}")
    if directions != [wanted]:
        best = "highest" if wanted == "maximize" else "lowest"
        return (f"hydra.sweeper.direction={directions[0]} contradicts trainer.monitor={monitor}: a sweep's best "
                f"run is the one of {best} {monitor}; accepted: hydra.sweeper.direction={wanted}")
    return None


def _swept_option_problem(config: DictConfig, parsed: list) -> str | None:
    """An option a swept group chooses (``optimizer=adam,sgdd``) that is not there, or whose
    file is not valid YAML: Hydra would find it only once the parent run existed (which it then
    deleted, having printed its id), in two lines."""
    from hydra.errors import MissingConfigException

    from cnnx.cli import one_line
    from cnnx.option_file_yaml import config_repository, load_problem

    if OmegaConf.select(config, "hydra.runtime.config_sources") is None:
        return None  # not composed by Hydra: no search path to read files from
    repository = None
    for override in parsed:
        if not override.is_sweep_override():
            continue
        repository = repository or config_repository(config.hydra)
        group = override.key_or_group
        if not repository.group_exists(group):
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # noqa: BLE001 — glob(): only the sweeper knows what it picks
            continue
        for value in values:
            if not repository.config_exists(f"{group}/{value}"):
                # Worded as the same mistake outside a sweep is (cnnx.cli.one_line).
                return one_line(MissingConfigException(f"In 'config': Could not find '{group}/{value}'",
                                                       f"{group}/{value}", repository.get_group_options(group)))
            problem = load_problem(repository, f"{group}/{value}")
            if problem is not None:
                return problem
    return None


def _swept_added_key_problem(config: DictConfig, parsed: list) -> str | None:
    """A key the sweep adds that no job's config takes (``+trainer.foo=1,2``): unknown whatever
    its value, it failed every job, after the parent run existed. A fixed one is refused with
    the other settings the jobs share; a swept one is not in the config the sweep composes."""
    from cnnx.config_schema import added_key_problem

    for override in parsed:
        key = override.key_or_group
        if override.is_sweep_override() and (override.is_add() or override.is_force_add()) and "." in key:
            probe = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
            OmegaConf.update(probe, key, None, force_add=True)
            problem = added_key_problem(probe)
            if problem is not None and f" {key} " in problem:
                return problem
    return None


def _job_settings_problem(config: DictConfig) -> str | None:
    """What every job would refuse, each after the sweep's parent run exists, leaving a FAILED
    child per job: the jobs' own checks (``cnnx.app.check_settings``) on the settings they share,
    and the registry's checks of the components they share (``cnnx.component_check``)."""
    from cnnx.app import check_settings
    from cnnx.cli import one_line
    from cnnx.component_check import check_components
    from cnnx.errors import CnnxError, ConfigError

    shared = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    swept = _swept(config)
    try:
        check_settings(shared, list(config.hydra.overrides.task), config.hydra, swept)
    except ConfigError as error:
        return str(error)
    try:
        check_components(shared, swept)
    except CnnxError as error:
        return one_line(error)
    return None


def sweep_settings_problem(config: DictConfig) -> str | None:
    """What keeps this multirun from running a single job, in one line; None if nothing."""
    if OmegaConf.select(config, "sweep.resume", default=False) and not OmegaConf.select(
            config, "tracking.enabled", default=True):
        return ("sweep.resume=true needs tracking: only the sweep's MLflow runs record which jobs "
                "finished; accepted: tracking=mlflow, or drop sweep.resume to run every job again")
    for group in ("launcher", "sweeper"):
        chosen = OmegaConf.select(config, f"hydra.{group}")
        if chosen is not None and not OmegaConf.is_dict(chosen):
            # hydra.launcher=joblib replaces the launcher's settings with a string; the group
            # is chosen with a slash.
            return (f"hydra.{group}={chosen} sets hydra.{group} to a string; choose a {group} "
                    f"with hydra/{group}={chosen} (a slash: it is a config group)")
    parsed = _parsed(list(config.hydra.overrides.task))
    problem = _swept_option_problem(config, parsed) or _swept_added_key_problem(config, parsed)
    if problem is not None:
        return problem
    if "trainer.monitor" in _swept(config):
        # The parent ranks its children, and a sweeper its trials, by one objective.
        return ("trainer.monitor is swept, and a sweep ranks its runs by one objective; accepted: one "
                "trainer.monitor for the whole sweep (cnnx compare --objective ranks them by another)")
    problem = _job_settings_problem(config)
    if problem is not None:
        return problem
    launcher = OmegaConf.select(config, "hydra.launcher") or {}
    joblib = joblib_launcher(config)
    if OmegaConf.is_dict(launcher):
        # A key added with + reaches the launcher's constructor: joblib takes any keyword (the
        # sweep ran on every core), submitit refuses it with a traceback. The launcher's
        # structured config (its ConfigStore node) lists its settings; its dict-typed ones
        # (submitit's additional_parameters, Ray's init and remote) take any key.
        from cnnx.config_schema import added_key_problem

        problem = added_key_problem(launcher, "hydra.launcher.",
                                    passed_on=LOKY_SETTINGS if joblib else ())
        if problem is not None:
            return problem
    timeout = launcher.get("idle_worker_timeout") if joblib else None
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout < float("inf")):
        # joblib hands it to loky unchecked: a string failed inside a worker with a 74-line
        # traceback about un-serialising a task.
        return (f"hydra.launcher.idle_worker_timeout={timeout!r} is not a positive number of seconds; accepted: a "
                f"number > 0 (how long an idle worker lives)")
    if launcher_kind(config) == "submitit_slurm":
        import shutil

        if shutil.which("srun") is None:
            # submitit would stop with a traceback ending in 'Could not detect "srun"'.
            return ("hydra/launcher=submitit_slurm submits jobs to SLURM, and this machine has no srun "
                    "on its PATH; run the sweep on the cluster's login node, or try it here with "
                    "hydra/launcher=submitit_local")
    if joblib and launcher.get("n_jobs") == 0:
        return ("hydra.launcher.n_jobs=0 starts no worker; accepted: a positive number of workers, "
                "or -1 for one per core (-2 for all but one, ...)")
    sweeper = OmegaConf.select(config, "hydra.sweeper") or {}
    if "optuna" in str(sweeper.get("_target_", "")):
        direction = sweeper.get("direction")
        directions = list(direction) if OmegaConf.is_list(direction) else [direction]
        directions = [str(getattr(d, "name", d)).lower() for d in directions]
        if any(d not in OPTUNA_DIRECTIONS for d in directions):
            return (f"hydra.sweeper.direction={direction} is not a direction; accepted: "
                    f"{', '.join(OPTUNA_DIRECTIONS)}")
        problem = _direction_problem(config, directions)
        if problem is not None:
            return problem
        for key in ("n_trials", "n_jobs"):
            value = sweeper.get(key)
            if isinstance(value, int) and value < 1:
                return f"hydra.sweeper.{key}={value} runs no trial; accepted: a positive integer"
        rate = sweeper.get("max_failure_rate", 0.0)
        if isinstance(rate, (int, float)) and not 0 <= rate <= 1:
            # The sweeper asserts it, with a traceback, once the sweep has started.
            return (f"hydra.sweeper.max_failure_rate={rate} is not a share of trials; accepted: a number "
                    f"from 0 (stop at the first failed trial) to 1 (never stop)")
        params = sweeper.get("params") or {}
        problem = _interval_problem(_parsed([f"hydra.sweeper.params.{key}={value}" for key, value in params.items()]))
        if problem is not None:
            return problem
    overrides = list(config.hydra.overrides.task)
    parsed = _parsed(overrides)
    return _interval_problem(parsed) or _empty_sweep(parsed) or _earlier_sweep(config)


def _earlier_sweep(config: DictConfig) -> str | None:
    """A new sweep in the directory of an earlier one: its jobs would prune the earlier jobs'
    checkpoints, from which ``sweep.resume=true`` continues them. With ``sweep.resume=true`` it
    is a new sweep too when no earlier run of it is found (a grid given other values). Only the
    default job directories (``hydra.sweep.subdir``: the job's number) are looked at; each job
    checks its own before it trains, which refuses it alone, after the sweep has started."""
    if (not OmegaConf.select(config, "trainer.checkpoint.enabled", default=True)
            or OmegaConf.select(config, "trainer.checkpoint.dir", default=None)
            or OmegaConf.select(config, "hydra.sweep.dir", default=None) is None):
        return None
    from cnnx.tracking.sweep_link import sweep_dir_of
    from cnnx.training.checkpoint import list_checkpoints

    sweep_dir = sweep_dir_of(config.hydra)
    found = []
    for job in sorted(sweep_dir.glob("*/checkpoints")):
        found = list_checkpoints(job)
        if found:
            break
    if not found:
        return None
    refusal = (f"hydra.sweep.dir: '{sweep_dir}' already holds checkpoints of an earlier sweep's jobs "
               f"({found[-1].relative_to(sweep_dir)}), which this sweep's would prune and mix with their own")
    if OmegaConf.select(config, "sweep.resume", default=False):
        from cnnx.tracking.sweep_callback import resumable_parent, sweep_store

        try:
            if resumable_parent(config) is not None:
                return None
        except Exception:  # noqa: BLE001 — a store that cannot be used: the sweep's start names it
            return None
        _, experiment_name, _ = sweep_store(config)
        return (f"{refusal}, and sweep.resume=true found no earlier run of this sweep in experiment "
                f"{experiment_name!r} to continue them; resume a sweep with the overrides and value lists "
                f"it was started with, or choose another hydra.sweep.dir")
    tracked = OmegaConf.select(config, "tracking.enabled", default=True)
    resume = "continue that sweep with sweep.resume=true, or " if tracked else ""
    return f"{refusal}; {resume}choose another hydra.sweep.dir"


class CheckSweepSettings(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from cnnx.cli import EXIT_USAGE

        global _tracked, _checkpointed
        _tracked = bool(OmegaConf.select(config, "tracking.enabled", default=True))
        _checkpointed = bool(OmegaConf.select(config, "trainer.checkpoint.enabled", default=True))
        problem = sweep_settings_problem(config)
        if problem is not None:
            # Hydra turns a callback's exception into a warning and would start the sweep anyway.
            print(f"cnnx: error: {problem}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE)
