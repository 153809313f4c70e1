"""Ray, started by cnnx just before the Ray launcher would start it (``hydra/launcher=ray``).

The launcher calls ``ray.init`` only when Ray is not running yet, so starting it here first
lets cnnx mend what the launcher's own start gets wrong for a sweep:

- ``ray.init`` takes SIGTERM over (its handler exits at once, and a local instance's aborts the
  process), so ``timeout``, systemd or a batch system stopping the sweep left its parent run
  RUNNING with no resume line. cnnx's handlers are put back after it.
- The launcher always passes ``object_store_memory`` (a work-around for its own CI), which Ray
  refuses when joining a running cluster (``ray.init.address``); it is left out there.
- Ray's driver merges log lines that differ only in their numbers, across workers: nearly
  every ``[#N] epoch …`` line of jobs running side by side, so most were never shown. Unless
  the user chose otherwise (``RAY_DEDUP_LOGS``), every line is shown, without colour codes
  when the console is not a terminal.
- A mistyped key under ``ray.init`` or ``ray.remote`` is one line before the sweep starts,
  not a traceback after its parent run exists.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

#: What hydra-ray-launcher 1.2 adds to ``ray.init`` unless it is set.
_LAUNCHER_DEFAULT = {"object_store_memory": 78643200}


def ray_launcher(config: DictConfig) -> bool:
    from cnnx.launcher_kind import launcher_kind

    return launcher_kind(config) == "ray"


def ray_init_options(config: DictConfig) -> dict[str, Any]:
    """``hydra.launcher.ray.init`` as the launcher would pass it, fit for a running cluster too."""
    options = OmegaConf.to_container(config.hydra.launcher.ray.init, resolve=True) or {}
    defaults = dict(_LAUNCHER_DEFAULT)
    if options.get("address") is not None:
        defaults.pop("object_store_memory")  # "must not be provided" when connecting
    return {**defaults, **options}


class StartRayForTheLauncher(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not ray_launcher(config):
            return
        from cnnx.cli import EXIT_USAGE

        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        if not sys.stdout.isatty():
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        import ray

        remote = OmegaConf.to_container(config.hydra.launcher.ray.remote, resolve=True) or {}
        try:
            if remote:  # (without options the launcher applies ray.remote bare)
                ray.remote(**remote)(_nothing)  # checks the options; runs nothing
        except (TypeError, ValueError) as error:
            # Hydra turns a callback's exception into a warning and would start the sweep anyway.
            print(f"cnnx: error: hydra.launcher.ray.remote: {error}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        if ray.is_initialized():
            return
        _warn_of_a_relative_sweep_dir(config)
        ours = {signum: signal.getsignal(signum) for signum in _stopping_signals()}
        try:
            ray.init(**ray_init_options(config))
        except (TypeError, RuntimeError, ValueError, ConnectionError) as error:
            if ray.is_initialized():
                raise
            # A mistyped key, or no cluster at ray.init.address: before the sweep's parent run.
            message = " ".join(str(error).split())
            print(f"cnnx: error: Ray did not start with hydra.launcher.ray.init={_shown(config)}: {message}",
                  file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        finally:
            for signum, handler in ours.items():
                if handler is not None:
                    signal.signal(signum, handler)


def _warn_of_a_relative_sweep_dir(config: DictConfig) -> None:
    """On a running cluster a job makes its folder in the Ray worker's working directory (where
    ``ray start`` ran), and a relative ``hydra.sweep.dir`` lands there, away from the sweep's."""
    from cnnx.cli import warn

    if OmegaConf.select(config, "hydra.launcher.ray.init.address") is None:
        return
    if not os.path.isabs(str(config.hydra.sweep.dir)):
        warn(f"hydra.sweep.dir={config.hydra.sweep.dir} is relative: on a running Ray cluster the jobs make it "
             f"in the working directory of the cluster's workers; give an absolute one, such as "
             f"hydra.sweep.dir=$PWD/multirun/\\${{now:%Y-%m-%d}}/\\${{now:%H-%M-%S}}")


def _shown(config: DictConfig) -> str:
    return str(OmegaConf.to_container(config.hydra.launcher.ray.init, resolve=True))


def _nothing() -> None:
    """The function ``ray.remote`` checks the launcher's options against."""


def _stopping_signals() -> list[int]:
    from cnnx.sweep_signals import STOPPING

    return [getattr(signal, name) for name in STOPPING]
