import pytest
from omegaconf import OmegaConf

from cnnx.sweep_settings import sweep_settings_problem


def settings(task=(), **hydra):
    hydra.setdefault("launcher", {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    hydra.setdefault("sweeper", {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"})
    return OmegaConf.create({"sweep": {"resume": False}, "tracking": {"enabled": True},
                             "hydra": {**hydra, "overrides": {"task": list(task)}}})


def optuna(**params):
    return {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
            "direction": "maximize", "n_trials": 4, "n_jobs": 1, "params": params}


@pytest.mark.parametrize("group", ["launcher", "sweeper"])
def test_a_group_set_with_a_dot_is_pointed_to_its_slash(group):
    problem = sweep_settings_problem(settings(**{group: "joblib"}))
    assert problem.startswith(f"hydra.{group}=joblib ") and f"hydra/{group}=joblib" in problem


@pytest.mark.parametrize("interval, fragment", [
    ("interval(0.3, 0.003)", "low end is above its high end"),
    ("tag(log, interval(0.3, 0.003))", "low end is above its high end"),
    ("tag(log, interval(0, 0.3))", "must start above 0"),
    ("tag(log, interval(-1, 3))", "must start above 0"),
    ("tag(lg, interval(0.1, 0.3))", "unknown tag 'lg'"),
])
def test_an_interval_optuna_cannot_sample_is_named_on_the_command_line_and_in_a_search_space(interval, fragment):
    on_command_line = sweep_settings_problem(settings([f"optimizer.lr={interval}"], sweeper=optuna()))
    assert on_command_line.startswith(f"optimizer.lr={interval}:") and fragment in on_command_line
    in_search_space = sweep_settings_problem(settings(sweeper=optuna(**{"optimizer.lr": interval})))
    assert in_search_space.startswith(f"hydra.sweeper.params.optimizer.lr={interval}:") and fragment in in_search_space


@pytest.mark.parametrize("interval", ["interval(0.1, 0.1)", "tag(log, interval(0.003, 0.3))", "interval(-1, 1)",
                                      "tag(log, interval(1, 64))"])
def test_intervals_optuna_samples_pass(interval):
    assert sweep_settings_problem(settings([f"optimizer.lr={interval}"], sweeper=optuna(**{"optimizer.lr": interval}))) is None


def test_slurm_without_srun_is_refused_before_submitit_tracebacks(monkeypatch):
    import shutil

    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "no srun" in sweep_settings_problem(settings(launcher=slurm))
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert sweep_settings_problem(settings(launcher=slurm)) is None


@pytest.mark.parametrize("rate, refused", [(-0.1, True), (1.5, True), (0, False), (0.25, False), (1, False)])
def test_an_optuna_failure_rate_outside_0_to_1_is_refused(rate, refused):
    sweeper = {**optuna(), "max_failure_rate": rate}
    problem = sweep_settings_problem(settings(sweeper=sweeper))
    assert (problem is not None and problem.startswith(f"hydra.sweeper.max_failure_rate={rate} ")) == refused
