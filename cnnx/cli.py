"""`cnnx` / `python -m cnnx`: the Hydra app, with user errors reported as one line.

Hydra prints composition errors over several lines (and user errors raised in the task as
tracebacks). With ``HYDRA_FULL_ERROR`` set it re-raises them instead, so they arrive here and
become ``cnnx: error: <one line naming the key and what is accepted>`` with exit code 2.
Anything else is a bug in cnnx or a plugin, and keeps its full traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import errno
import functools
import importlib
import logging
import os
import re
import shlex
import signal
import sys
import threading
import traceback
import warnings

from cnnx.override_text import override_key

EXIT_USAGE = 2

#: The line a run ends with (stopped, failed, or where it was logged), kept in its run directory's app.log too. Job
#: logging (conf/hydra/job_logging/cnnx.yaml) gives it the file alone: the console had it on
#: stderr. Before Hydra has set logging up the line has nowhere else to go, and must not reach
#: logging's last-resort handler, which would print it a second time.
OUTCOME_LOG = logging.getLogger("cnnx.outcome")
OUTCOME_LOG.addHandler(logging.NullHandler())
OUTCOME_LOG.propagate = False


def report(line: str, level: int = logging.ERROR) -> None:
    print(line, file=sys.stderr)
    OUTCOME_LOG.log(level, line)


def warn(message: str) -> None:
    """Something the user should know that does not stop the work: one line on stderr, beside
    the ``cnnx: error:`` lines."""
    print(f"cnnx: warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def one_line_warnings(*categories: type[Warning]):
    """Show cnnx's own warnings of ``categories`` raised in the block as ``warn`` lines (their
    messages name the file concerned): Python would add a second line quoting cnnx's source,
    which tells a user nothing. Other warnings are shown as Python shows them. All come once
    the block ends, also when it fails."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            for category in categories:
                warnings.simplefilter("always", category)
            yield
    finally:
        for warning in caught:
            if issubclass(warning.category, categories):
                warn(str(warning.message))
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
#: Errors that mean "this path cannot be written" (bad output directory), not a bug.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EROFS, errno.ENOSPC, errno.EEXIST,
               errno.EISDIR}


def _raised_creating_output_dir(error: OSError) -> bool:
    """Whether Hydra failed to create the run's directory: there even "no such file" (a
    pseudo-filesystem such as /proc) means the directory cannot be written."""
    codes = [frame.f_code for frame, _ in traceback.walk_tb(error.__traceback__)]
    in_run_job = any(code.co_name == "run_job" and f"{os.sep}hydra{os.sep}" in code.co_filename for code in codes)
    return in_run_job and bool(codes) and codes[-1].co_name == "mkdir"


def _override_through_a_leaf(error: BaseException) -> str | None:
    """The key of the override Hydra was applying when OmegaConf found a node on its path that
    holds no named keys: null (``a.b.c=1`` where ``a.b`` is null: "Unexpected type: None") or a
    list (``hydra.searchpath.x=1``: "invalid literal for int()"). OmegaConf's messages name
    neither the key nor the value."""
    for frame, _ in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_name == "_apply_overrides_to_config" and isinstance(frame.f_locals.get("key"), str):
            return frame.f_locals["key"]
    return None


def _typed(key: str) -> bool:
    """Whether the command line sets ``key`` (``key=…``, ``+key=…``, ``++key=…``)."""
    return any(override_key(arg) == key for arg in sys.argv[1:])


def one_line(error: BaseException) -> str | None:
    """The user-facing sentence for an error caused by input, or None for a bug."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import (
        ConfigAttributeError, ConfigKeyError, ConfigTypeError, MissingMandatoryValue,
        OmegaConfBaseException, ValidationError,
    )

    from cnnx.errors import CnnxError, UnknownOptionError, flat_message
    from cnnx.hydra_plugin_imports import scan_stopped_by
    from cnnx.option_file_yaml import malformed_option_file

    if isinstance(error, UnknownOptionError) and error.maybe_inherited and not _typed(error.key):
        return f"{flat_message(error)} (set by a preset or another group? drop it with ~{error.key})"
    if isinstance(error, CnnxError):
        return " ".join(str(error).split("\n"))
    stopped = scan_stopped_by(error)
    if stopped is not None:
        return stopped
    malformed = malformed_option_file(error)
    if malformed is not None:
        return malformed
    if isinstance(error, ValueError) and str(error).startswith("Only one of --run, --multirun"):
        # Hydra's own check of its flags, raised as a bare ValueError.
        return ("only one of -m/--multirun, --cfg, --info and --shell-completion can be given; to "
                "see a sweep job's config, drop -m and give each swept key one value")
    if isinstance(error, MemoryError):  # NumPy's says how much and for what shape; Python's nothing
        detail = " ".join(str(error).split())
        return (f"out of memory{': ' + detail if detail else ''}; make the data or the model smaller "
                f"(dataset.size, trainer.batch_size, the layers' widths)")
    if isinstance(error, OSError) and error.filename and (
            error.errno in _UNWRITABLE or _raised_creating_output_dir(error)):
        return (f"cannot write '{error.filename}': {error.strerror}; the output directory "
                f"(hydra.run.dir, or hydra.sweep.dir with -m) must be a writable directory")
    if isinstance(error, (AssertionError, ValueError)):
        override = _override_through_a_leaf(error)
        if override is not None:
            return (_search_space_override(override, [])
                    or f"{override}: a key on its path is null or a list in the composed config, which holds "
                       f"no key of that name; set that key itself (--cfg job, or --cfg hydra for hydra.*, shows it)")
    if isinstance(error, MissingConfigException):
        first = str(error).splitlines()[0]
        return (f"{first}; available: {', '.join(error.options)}" if error.options else first) + \
            _registered_without_config(first) + _hidden_configs(first)
    cause = error.__cause__ if isinstance(error, HydraException) else error
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or getattr(cause, "key", None) or "?"
        if isinstance(cause, MissingMandatoryValue):
            return f"missing value for {key}; set it, e.g. {key}=..."
        parent = getattr(cause, "parent_node", None)
        keys = [str(k) for k in parent.keys()] if OmegaConf.is_dict(parent) else []
        # OmegaConf's own words: "list index out of range", "Index 'x' (str) is not an int".
        if OmegaConf.is_list(parent) or re.match(r"Index '.*' \(\w+\) is not an int", str(getattr(cause, "msg", ""))):
            where = key.split("[")[0] if "[" in key else key.rpartition(".")[0]
            items = f" ({len(parent)} items)" if OmegaConf.is_list(parent) else ""
            return (f"{key}: {where} is a list here{items}, which holds no such key; "
                    f"set the whole list instead, e.g. {where}=[...]")
        if isinstance(cause, ValidationError):
            reason = str(cause.msg).splitlines()[0] if cause.msg else "invalid value"
            return _search_space_override(key, keys) or f"invalid value for {key}: {reason}"
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            searched = _search_space_override(key, keys)
            if searched:
                return searched
            if OmegaConf.is_dict(parent) and OmegaConf.get_type(parent) is dict:
                # Not a schema (a component's options, the layers, Hydra's env_set): the key may
                # be one this config does not list yet, or, for a component, a typo its factory refuses.
                refused = _refused_option(key, parent)
                if refused:
                    return refused
                return (f"{key} is not in the config yet (keys here: {', '.join(keys) or 'none'}); "
                        f"to add an option, prefix it with +: +{key}=...")
            return f"unknown config key {key}; accepted keys here: {', '.join(keys) or '?'}"
        if isinstance(cause, ConfigTypeError) and "does not support deletion" in str(cause):
            return (f"~{key}: cnnx's config schema needs {key} in every run, so it cannot be "
                    f"removed; set its value instead (--cfg job shows it)")
        return " ".join(str(cause).split("\n"))
    deletion = re.match(r"Could not delete from config\. '([^']+)' does not exist", str(error))
    if deletion:
        key = deletion.group(1)
        return (f"~{key}: nothing to remove, {key} is null or absent in the composed config "
                f"(--cfg job shows it)")
    if isinstance(error, HydraException):
        # hydra.sweeper.params.optimizer.lr=choice(...) unquoted: Hydra reads a sweep of its own config
        swept = re.search(rf"not supported : '\+*({re.escape(_SEARCH_SPACE)}[^=']+)=", str(error))
        return (swept and _search_space_override(swept.group(1), [])
                or " ".join(line.strip() for line in str(error).splitlines() if line.strip()))
    return None


_SEARCH_SPACE = "hydra.sweeper.params."


def _refused_option(key: str, parent: object) -> str | None:
    """What a run would say of ``key`` as an option of the component ``parent`` configures
    (None when its factory takes it, or ``parent`` is no component with a known type)."""
    from omegaconf import OmegaConf

    from cnnx.component_check import check_option_name
    from cnnx.errors import CnnxError

    component_key, _, option = key.rpartition(".")
    component_type = OmegaConf.select(parent, "type", throw_on_resolution_failure=False)
    # The type this command gives the component after this key (Hydra applies overrides in
    # order): judged against the type before it, a valid option would be refused. A type set
    # before the key is the one the config holds already.
    given = [arg.lstrip("+~") for arg in sys.argv[1:]]
    where = next((i for i, arg in enumerate(given) if arg.startswith(f"{key}=")), len(given))
    retyped = any(arg.startswith((f"{component_key}.type=", f"{component_key}=")) for arg in given[where + 1:])
    if not isinstance(component_type, str) or retyped:
        return None
    try:
        check_option_name(component_key, component_type, option)
    except CnnxError as refused:
        return " ".join(str(refused).split())
    return None


def _search_space_override(key: str, keys: list[str]) -> str | None:
    """A sweeper's search space is keyed by dotted names (``optimizer.lr``), which an override of
    ``hydra.sweeper.params.optimizer.lr`` reads as nested keys, so no override can set one; a
    sweep of the key itself on the command line replaces its entry."""
    if not key.startswith(_SEARCH_SPACE):
        return None
    name = key[len(_SEARCH_SPACE):]
    named = [k for k in keys if k == name or k.startswith(f"{name}.")]
    if "." not in name and not named:
        return None  # a plain unknown name: the dots are not the problem
    example = named[0] if len(named) == 1 else name
    held = f" ({', '.join(named)} is there)" if named else ""
    return (f"{key}: no override can set an entry of hydra.sweeper.params{held}: its names hold dots, which "
            f"an override reads as nested keys; sweep the key on the command line instead, which replaces "
            f"its entry: {example}=A,B (or, with hydra/sweeper=optuna, {example}='interval(LOW, HIGH)')")


def _hidden_configs(message: str) -> str:
    """For a config not found: a plugin whose configs an editable install hides from Hydra."""
    from cnnx.hydra_plugin_imports import hidden_portions

    if "Could not find" not in message:
        return ""
    return "".join(f"; {hidden.advice()}" for hidden in hidden_portions())


def _registered_without_config(message: str) -> str:
    """For ``optimizer=NAME`` where NAME is registered but no ``optimizer/NAME.yaml`` is found
    (a plugin without configs, or whose configs are not on Hydra's search path): how to use it."""
    from cnnx import registry

    missing = re.search(r"Could not find '(\w+)/(\w+)'", message)
    if not missing or missing.group(1) not in registry.GROUPS:
        return ""
    group, name = missing.groups()
    components = registry.Registry(group)
    if name not in components.claims():
        return ""
    return (f"; {components.label(name)} is installed, but no config {group}/{name}.yaml is on the "
            f"search path: use {group}.type={name}, or ship the file with a SearchPathPlugin "
            f"(README: Write a plugin)")


def resume_command(argv: list[str], run_dir: str | None) -> str:
    """The command that continues an interrupted run in the same directory."""
    kept = [a for a in argv if not a.startswith(("trainer.resume=", "hydra.run.dir="))]
    extra = ["trainer.resume=true"] + ([f"hydra.run.dir={run_dir}"] if run_dir else [])
    return shlex.join(["python", "-m", "cnnx", *kept, *extra])


def sweep_resume_command(argv: list[str]) -> str:
    """The command that continues an interrupted sweep under the same parent run."""
    kept = [a for a in argv if not a.startswith(("trainer.resume=", "sweep.resume="))]
    return shlex.join(["python", "-m", "cnnx", *kept, "sweep.resume=true"])


def sweep_continuation(argv: list[str], tracked: bool, stopped_jobs: str = "") -> str:
    """How to go on with an interrupted sweep; ``stopped_jobs`` overrides what it says of the
    jobs that were stopped. Only MLflow knows which jobs finished, so an untracked sweep can
    only be run again."""
    if not tracked:
        # Its own directory holds the stopped jobs' checkpoints, which a new sweep there may not
        # prune (it is refused): Hydra's default directory is a new one.
        kept = [a for a in argv if not a.startswith(("sweep.resume=", "hydra.sweep.dir="))]
        return (f"run it again with: {shlex.join(['python', '-m', 'cnnx', *kept])} (tracking is off, so "
                f"nothing records which jobs finished: every job runs again, in a new sweep directory)")
    return (f"continue it with: {sweep_resume_command(argv)} (FINISHED jobs are skipped, "
            f"{stopped_jobs or 'stopped ones continue from their last checkpoint'})")


def interrupted_message(error, argv: list[str]) -> str:
    if error.in_sweep:
        # A job's own checkpoint is not resumed by hand: the resumed sweep continues it.
        this_job = "" if error.checkpoint else "this one starts again"
        return (f"sweep interrupted by {error.signal_name} {error.where} of job {error.run_dir}; "
                f"{sweep_continuation(argv, error.sweep_tracked, this_job)}")
    if error.checkpoint is None:
        why = " (checkpoints are off: trainer.checkpoint.enabled=false)" if error.checkpoints_off else ""
        return f"interrupted by {error.signal_name} {error.where}; no checkpoint was written{why}"
    return (f"interrupted by {error.signal_name} {error.where}; checkpoint saved to "
            f"{error.checkpoint}; resume with: {resume_command(argv, error.run_dir)}")


def stopped_at_once_message(error: KeyboardInterrupt, argv: list[str]) -> str:
    """A Ctrl-C outside the batch boundaries (a second one, or before training started)."""
    newest = getattr(error, "last_checkpoint", None)
    # A second Ctrl-C while the first one's stop was winding down (the MLflow run being marked
    # KILLED): the first one's checkpoint, written by then, is the newest.
    earlier = error.__context__
    while newest is None and earlier is not None:
        newest, earlier = getattr(earlier, "checkpoint", None), earlier.__context__
    if newest is None:
        return "interrupted; no checkpoint written for this moment"
    return (f"interrupted; no checkpoint written for this moment, but the newest one, {newest}, "
            f"resumes with: {resume_command(argv, getattr(error, 'run_dir', None))}")


def report_user_errors(function):
    """Wrap a tool's ``main`` so that user errors (and a Hydra plugin that stops Hydra's scan)
    become ``cnnx: error: ...`` and exit code 2."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs) -> int:
        from cnnx.errors import CnnxError

        try:
            return function(*args, **kwargs)
        except CnnxError as error:
            print(f"cnnx: error: {' '.join(str(error).split())}", file=sys.stderr)
            return EXIT_USAGE
        except BrokenPipeError:
            return reader_gone()
        except KeyboardInterrupt:  # Ctrl-C: the user knows why, a traceback tells them nothing
            print("cnnx: interrupted", file=sys.stderr)
            return 128 + signal.SIGINT
        except Exception as error:  # noqa: BLE001 — a broken Hydra plugin is the user's to fix; the rest, bugs
            from cnnx.hydra_plugin_imports import scan_stopped_by

            stopped = scan_stopped_by(error)
            if stopped is None:
                raise
            print(f"cnnx: error: {stopped}", file=sys.stderr)
            return EXIT_USAGE
    return wrapper


def reader_gone() -> int:
    """The exit code once stdout's reader went away (``cnnx compare ... | head``): there is
    nothing left to say to it, and the interpreter's final flush must not fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE


class _FlagRefused(Exception):
    pass


def hydra_flag_error(argv: list[str]) -> str | None:
    """What Hydra's parser refuses in ``argv``, in one line; None if it accepts them.

    Hydra's parser prints its usage and then the error naming the script (``__main__.py``).
    """
    if "--version" in argv:  # argparse prints it and exits: Hydra handles that itself
        return None
    from hydra._internal.utils import get_args_parser

    def refuse(message: str) -> None:
        raise _FlagRefused(message)

    parser = get_args_parser()
    parser.error = refuse
    try:
        parser.parse_args(argv)
    except _FlagRefused as refused:
        return f"{refused}; Hydra's flags: python -m cnnx --hydra-help"
    return None


#: ``cnnx NAME ...`` runs ``cnnx.NAME.main`` (also ``python -m cnnx.NAME``), not a training run.
SUBCOMMANDS = ("plugins", "predict", "compare")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(f"cnnx.{argv[0]}")
        return module.main(argv[1:])

    if argv[:1] and not argv[0].startswith(("-", "+", "~")) and "=" not in argv[0]:
        # Hydra would call it an override "missing EQUAL", which hides a mistyped subcommand.
        close = difflib.get_close_matches(argv[0], SUBCOMMANDS, n=1)
        hint = f"; did you mean cnnx {close[0]}?" if close else ""
        print(f"cnnx: error: {argv[0]!r} is neither a command ({', '.join(SUBCOMMANDS)}) nor an override "
              f"KEY=VALUE{hint}", file=sys.stderr)
        return EXIT_USAGE
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # Hydra's parser takes overrides only in one run: `... +experiment=lenet -m lr=0.1,0.2`
    # would be refused as unrecognized arguments. -m takes no value, so it can go first.
    multirun = [a for a in argv if a in ("-m", "--multirun")]
    argv = multirun + [a for a in argv if a not in multirun]
    refused = hydra_flag_error(argv)
    if refused is not None:
        print(f"cnnx: error: {refused}", file=sys.stderr)
        return EXIT_USAGE
    sys.argv = [sys.argv[0], *argv]
    sweep_signals = None
    if multirun:
        from cnnx.sweep_signals import SweepSignals

        sweep_signals = SweepSignals()
    code = _run_task(argv, sweep_signals)
    if sweep_signals is not None and code == 0:
        # Once stopped, they stay: the parent run is only ended at exit.
        sweep_signals.restore()
    return code


def _run_task(argv: list[str], sweep_signals) -> int:
    from cnnx.app import task
    from cnnx.errors import ReportedInputError
    from cnnx.training.signals import TrainingInterrupted

    try:
        task()
        sys.stdout.flush()  # `--help | head`: a closed pipe raises here, not at exit
    except BrokenPipeError:
        return reader_gone()
    except TrainingInterrupted as interruption:
        _sweep_stopped(sweep_signals)
        report(f"cnnx: {interrupted_message(interruption, argv)}")
        # The shell convention for "stopped by signal N".
        return 128 + getattr(signal, interruption.signal_name, signal.SIGINT)
    except ReportedInputError as reported:
        report(f"cnnx: error: {one_line(reported.error)}")
        return exit_status(reported.error)
    except KeyboardInterrupt as interruption:
        if sweep_signals is not None:
            # The sweep's own process (parallel launchers' jobs run elsewhere): it never trains.
            return _sweep_interrupted(sweep_signals, sweep_signals.signal_name
                                      or getattr(interruption, "signal_name", "SIGINT"), argv)
        # Outside the training loop (loading data, a second Ctrl-C): nothing consistent to save.
        report(f"cnnx: {stopped_at_once_message(interruption, argv)}")
        return 128 + signal.SIGINT
    except Exception as error:  # noqa: BLE001 — sorted into user errors and bugs below
        if sweep_signals is not None and sweep_signals.signal_name is not None:
            # A worker that the signal reached first may have failed the sweep before the
            # signal reached this process: the signal is what happened.
            return _sweep_interrupted(sweep_signals, sweep_signals.signal_name, argv)
        killed = killed_worker(error)
        if killed is not None:
            what, code = killed
            _sweep_stopped(sweep_signals)
            print(f"cnnx: error: {what}; {_stopped_sweep_continuation(argv)}", file=sys.stderr)
            return code
        message = one_line(error) or refused_submission(error)
        if message is None:
            raise
        report(f"cnnx: error: {message}")
        return exit_status(error)
    return 0


def exit_status(error: BaseException) -> int:
    """2 for a one-line error (bad input), unless the error carries a status of its own (a
    tracking process killed mid-run: 128 + the signal's number)."""
    return getattr(error, "exit_status", None) or EXIT_USAGE


def _sweep_interrupted(sweep_signals, name: str, argv: list[str]) -> int:
    """Stop the sweep that signal ``name`` interrupted, say how to continue it, and return the
    shell's "stopped by signal" code, 128 + its number."""
    _sweep_stopped(sweep_signals)
    print(f"cnnx: sweep interrupted by {name}; {_stopped_sweep_continuation(argv)}", file=sys.stderr)
    return 128 + getattr(signal, name, signal.SIGINT)


def _sweep_stopped(sweep_signals) -> None:
    """The sweep stops, and so do its jobs in processes of their own, which a signal sent to
    this process alone did not reach."""
    import cnnx.sweep_signals

    cnnx.sweep_signals.sweep_stopped = True
    if sweep_signals is None:
        return
    sweep_signals.stopping()
    from cnnx.sweep_signals import stop_children

    try:
        # A Ctrl-C in the terminal reached the jobs as well, and they stop on their own; a SIGINT
        # sent to this process alone (kill -INT PID) did not: jobs still running after a moment
        # are stopped as after a SIGTERM (submitit's local jobs trained on to the end).
        stop_children(settle=0.0 if sweep_signals.signal_name is not None else 3.0)
        from cnnx.slurm_jobs import cancel_slurm_jobs

        cancel_slurm_jobs()  # jobs on other machines, which no signal here reaches
    except KeyboardInterrupt:  # a Ctrl-C while it waits for them: it waits no longer
        pass


def _stopped_sweep_continuation(argv: list[str]) -> str:
    from cnnx.sweep_settings import sweep_is_checkpointed, sweep_is_tracked

    stopped = "" if sweep_is_checkpointed() else "stopped ones start again: checkpoints are off"
    return sweep_continuation(argv, sweep_is_tracked(), stopped)


def killed_worker(error: BaseException) -> tuple[str, int] | None:
    """What ended a job outside cnnx's hands, and the exit code that says so; None for any other
    error. Matched by name: importing joblib, submitit or Ray here would slow every command's start.

    - joblib's ``TerminatedWorkerError``: a worker killed (the OOM killer, ``kill -9``);
    - Ray's ``WorkerCrashedError``: the same under the Ray launcher; its ``OutOfMemoryError`` (the
      memory monitor killed the task) and ``NodeDiedError`` (a lost node);
    - submitit's ``UncompletedJobError``: a SLURM job cancelled (``scancel``), killed (out of
      memory, a failed node) or past its time limit with no requeue left; a submitit_local
      job's process killed.
    """
    names = _class_names(error)
    if "TerminatedWorkerError" in names:
        return _terminated_worker(str(error))
    if "WorkerCrashedError" in names:
        return "a Ray worker process of the sweep died while it ran a job (out of memory? killed?)", 1
    if "RayError" in names and "OutOfMemoryError" in names:
        return "Ray's memory monitor killed a job of the sweep: its node ran out of memory", 1
    if "RayError" in names and "NodeDiedError" in names:
        return "the Ray node that ran a job of the sweep died", 1
    if "UncompletedJobError" in names and "FailedJobError" not in names:
        return _uncompleted_slurm_job(str(error)), 1
    return None


def _class_names(error: BaseException) -> set[str]:
    """The names of the error's classes: launchers' errors are matched by name, unimported."""
    return {cls.__name__ for cls in type(error).__mro__}


def _terminated_worker(text: str) -> tuple[str, int]:
    # Its message lists the workers' exit codes as {SIGKILL(-9), EXIT(1)}.
    for name, code in re.findall(r"\b([A-Z][A-Z0-9]*)\((-?\d+)\)", text):
        if int(code) < 0 and name.startswith("SIG"):
            hint = " (out of memory?)" if name == "SIGKILL" else ""
            # As for a signal that stops the sweep itself: 128 + its number.
            return f"a worker process of the sweep was killed by {name}{hint}", 128 - int(code)
        if int(code) > 0:
            return f"a worker process of the sweep exited unexpectedly with code {code}", 1
    return "a worker process of the sweep ended unexpectedly", 1


def _uncompleted_slurm_job(text: str) -> str:
    """submitit's message, many lines with the job's log in them, as one sentence."""
    if "timed-out" in text:
        named = re.search(r"\(job (\S+); its logs are in (.+)\)\s*$", text)
        job, logs = (f"job {named.group(1)}", f"; its logs are in {named.group(2)}") if named else ("a job", "")
        return (f"{job} of the sweep reached its time limit (hydra.launcher.timeout_min) more often than "
                f"submitit requeues it (hydra.launcher.max_num_timeout){logs}")
    ended = re.search(r"Job (\S+) \(task: \d+\) with path (\S+)\s+has not produced any output \(state: ([^)\n]+)\)", text)
    if ended is None:
        return f"a job of the sweep ended without a result: {text.strip().splitlines()[0] if text.strip() else 'no reason given'}"
    job, result, state = ended.groups()
    # SLURM's states say what ended it; submitit_local's (FINISHED) only that its process is gone.
    return (f"job {job} of the sweep ended without a result (state: {state.strip()}: cancelled, killed, out of "
            f"memory?); its logs are in {os.path.dirname(result)}")


def refused_submission(error: BaseException) -> str | None:
    """The scheduler's own reason when it refused the sweep's jobs (submitit's ``FailedJobError``
    carrying ``sbatch``'s error: an unknown partition, a time limit above the partition's)."""
    if "FailedJobError" not in _class_names(error):
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip().startswith("sbatch:")]
    if not lines:
        return None
    return f"SLURM refused the sweep's jobs: {'; '.join(lines)}; check the hydra.launcher settings it names"


def entry() -> None:
    """``cnnx`` and ``python -m cnnx``: run, then exit without tearing down every module.

    With scikit-learn, SciPy and MLflow loaded, the interpreter's orderly teardown takes
    0.5–0.8 s after the work is done. Threads are joined and exit handlers (logging,
    temporary files, helper processes, joblib's workers) run as at a normal exit, and the
    standard streams are flushed: only the teardown of modules is skipped.
    """
    from cnnx.training.signals import FINISHED_RUN_SIGNALS

    FINISHED_RUN_SIGNALS.wanted = True  # this process ends with the run: see FinishedRunSignals
    code = main()
    if FINISHED_RUN_SIGNALS.late_signal is not None and code == 0:
        # stderr only: the run's log file is closed by now
        print(f"cnnx: {FINISHED_RUN_SIGNALS.late_signal} received once the run had finished; nothing was lost "
              f"(nothing to resume)", file=sys.stderr)
    # The interpreter's own order: join threads and run their exit hooks (joblib's workers
    # are told to stop there), then the atexit handlers.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
