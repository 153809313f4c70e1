"""Which way a sweeper optimises ``trainer.monitor``: accuracies up, losses down.

cnnx judges runs that way (a sweep's best child, ``objective_mode``; the best checkpoint; early
stopping's ``mode: auto``). An Optuna sweeper told the other way draws its trials towards the
worst runs, and its best trial is not the parent run's. ``+hparams=lenet_optuna`` therefore
sets ``hydra.sweeper.direction: ${cnnx.direction:${trainer.monitor}}``; the sweeper reads it
resolved, as it reads ``study_name: ${experiment_name}``.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from cnnx.training.objective import objective_mode

RESOLVER = "cnnx.direction"


def direction_of(monitor: str) -> str:
    """Optuna's word for the way ``monitor`` gets better."""
    return "maximize" if objective_mode(monitor) == "max" else "minimize"


def register_resolver() -> None:
    """Idempotent: the app registers it when imported, and a job process may import it twice."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, direction_of)
