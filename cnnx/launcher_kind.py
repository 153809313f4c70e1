"""Which Hydra launcher a sweep runs on, told by its class (``hydra.launcher._target_``): a
launcher's config file may have any name (a user's own ``hydra/launcher``), its class not."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

_SUBMITIT = {"SlurmLauncher": "submitit_slurm", "LocalLauncher": "submitit_local"}


def launcher_kind(config: DictConfig) -> str | None:
    """``joblib``, ``submitit_local``, ``submitit_slurm`` or ``ray``; None for Hydra's basic
    launcher and any other."""
    module, _, name = str(OmegaConf.select(config, "hydra.launcher._target_", default="")).rpartition(".")
    if "hydra_joblib_launcher" in module:
        return "joblib"
    if "hydra_ray_launcher" in module:
        return "ray"
    if "hydra_submitit_launcher" in module:
        return _SUBMITIT.get(name)
    return None
