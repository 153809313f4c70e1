"""Which Hydra launcher a sweep runs on, told by its class (``hydra.launcher._target_``): a
launcher's config file may have any name (a user's own ``hydra/launcher``), its class not, and
a lab's own launcher that subclasses one of these (in its own ``hydra_plugins`` package) is of
that one's kind: its jobs run, and must be stopped, the same way."""

from __future__ import annotations

import importlib

from omegaconf import DictConfig, OmegaConf

#: (module the class is defined in, starting with; class name, or None for any) → kind.
_KINDS = (
    ("hydra_plugins.hydra_joblib_launcher.", None, "joblib"),
    ("hydra_plugins.hydra_ray_launcher.", None, "ray"),
    ("hydra_plugins.hydra_submitit_launcher.", "SlurmLauncher", "submitit_slurm"),
    ("hydra_plugins.hydra_submitit_launcher.", "LocalLauncher", "submitit_local"),
    ("hydra._internal.core_plugins.basic_launcher", "BasicLauncher", "basic"),
)

#: The kinds whose jobs are submitit's: a process each, with its own signals and its own logs.
SUBMITIT_KINDS = ("submitit_local", "submitit_slurm")


def launcher_kind(config: DictConfig) -> str | None:
    """``joblib``, ``submitit_local``, ``submitit_slurm``, ``ray`` or ``basic`` (Hydra's own,
    one job after another in this process); None for a launcher of none of these kinds."""
    return kind_of_launcher(str(OmegaConf.select(config, "hydra.launcher._target_", default="")))


def kind_of_launcher(target: str) -> str | None:
    """``launcher_kind`` of the launcher class named ``target`` (a ``_target_``)."""
    for module, name in _class_and_bases(target):
        for prefix, class_name, kind in _KINDS:
            if module.startswith(prefix) and class_name in (None, name):
                return kind
    return None
    return None


def _class_and_bases(target: str) -> list[tuple[str, str]]:
    """(module, name) of the class ``target`` names and of its bases, nearest first; only its
    own when it cannot be imported here (Hydra imported it already wherever it launches)."""
    module, _, name = target.rpartition(".")
    try:
        launcher = getattr(importlib.import_module(module), name)
        return [(cls.__module__, cls.__name__) for cls in launcher.__mro__]
    except (ImportError, AttributeError, ValueError, TypeError):
        return [(module, name)]
