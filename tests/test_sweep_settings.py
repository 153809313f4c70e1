import pytest
from omegaconf import OmegaConf

from cnnx.sweep_settings import sweep_settings_problem


def settings(task=(), **hydra):
    hydra.setdefault("launcher", {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    hydra.setdefault("sweeper", {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"})
    return OmegaConf.create({"sweep": {"resume": False}, "tracking": {"enabled": True}, "trainer": {"monitor": "val_acc"},
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


def composed(*overrides):
    """The sweep's config as the CLI composes it, with cnnx's resolvers registered."""
    import cnnx.app  # noqa: F401 — registers the resolvers, as the CLI does by importing it
    from hydra import compose, initialize_config_module

    with initialize_config_module("cnnx.conf", version_base="1.3"):
        return compose("config", overrides=["+experiment=digits_small", *overrides], return_hydra_config=True)


@pytest.mark.parametrize("monitor, direction", [("val_acc", "maximize"), ("val_loss", "minimize"),
                                                ("train_acc", "maximize"), ("train_loss", "minimize")])
def test_the_optuna_preset_optimises_the_monitor_the_way_a_sweep_picks_its_best_run(monitor, direction):
    config = composed("+hparams=lenet_optuna", f"trainer.monitor={monitor}")
    assert config.hydra.sweeper.direction == direction
    assert sweep_settings_problem(config) is None
    against = {"maximize": "minimize", "minimize": "maximize"}[direction]
    best = "highest" if direction == "maximize" else "lowest"
    assert sweep_settings_problem(composed("+hparams=lenet_optuna", f"trainer.monitor={monitor}",
                                           f"hydra.sweeper.direction={against}")) == (
        f"hydra.sweeper.direction={against} contradicts trainer.monitor={monitor}: a sweep's best run is the one of "
        f"{best} {monitor}; accepted: hydra.sweeper.direction={direction}")


def test_optuna_chosen_without_the_preset_is_told_the_direction_of_the_monitor():
    # Optuna's own default is to minimise, accuracies included.
    assert sweep_settings_problem(composed("hydra/sweeper=optuna")).endswith("accepted: hydra.sweeper.direction=maximize")
    assert sweep_settings_problem(composed("hydra/sweeper=optuna", "hydra.sweeper.direction=maximize")) is None


@pytest.mark.parametrize("task, params", [(["trainer.monitor=val_acc,val_loss"], {}),
                                          ([], {"trainer.monitor": "choice(val_acc, val_loss)"})])
def test_optuna_refuses_a_swept_monitor_and_several_objectives(task, params):
    assert sweep_settings_problem(settings(task, sweeper=optuna(**params))).startswith("trainer.monitor is swept")
    # Hydra's own sweeper too: its parent ranked the children by one of the monitors, and
    # named best a child that had logged the other.
    assert sweep_settings_problem(settings(["trainer.monitor=val_acc,val_loss"])).startswith("trainer.monitor is swept")
    two = {**optuna(), "direction": ["maximize", "minimize"]}
    assert sweep_settings_problem(settings(sweeper=two)).startswith(
        "hydra.sweeper.direction=[maximize,minimize] asks for 2 objectives")


def test_a_launcher_setting_added_with_a_plus_must_be_one_of_the_launchers(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")  # srun, as on a login node
    slurm = ["hydra/launcher=submitit_slurm", "+hydra.launcher.partition=cpu"]
    # settings of the launcher's own config, and keys of its dict-typed ones, which take any
    assert sweep_settings_problem(composed(*slurm, "+hydra.launcher.additional_parameters.wckey=cnnx",
                                           "hydra.launcher.setup=[module load python]")) is None
    assert sweep_settings_problem(composed(*slurm, "+hydra.launcher.partitoin=cpu")).startswith(
        "unknown config key hydra.launcher.partitoin (added with +hydra.launcher.partitoin); accepted keys here: "
        "submitit_folder, timeout_min, cpus_per_task,")
    assert sweep_settings_problem(composed("+hydra.launcher.n_jobs=2")) == (
        "unknown config key hydra.launcher.n_jobs (added with +hydra.launcher.n_jobs); accepted keys here: none")


def test_the_ray_launchers_init_and_remote_take_any_key():
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    assert sweep_settings_problem(composed("hydra/launcher=ray", "+hydra.launcher.ray.remote.num_cpus=2",
                                           "+hydra.launcher.ray.init.num_cpus=2")) is None
    assert sweep_settings_problem(composed("hydra/launcher=ray", "+hydra.launcher.ray.remot.num_cpus=2")).startswith(
        "unknown config key hydra.launcher.ray.remot ")


def warmup_sweep(*task):
    config = settings(task)
    config.merge_with({"seed": 0, "scheduler": {"type": "cosine", "warmup_epochs": 15},
                       "trainer": {"epochs": 10, "grad_clip_norm": None}})
    return config


@pytest.mark.parametrize("task, refused", [
    (["seed=1,2"], True),  # every job runs 10 epochs with a 15-epoch warm-up
    (["trainer.epochs=10,30"], False),  # each job checks its own
    # A preset or a group may set either key: the jobs' values are not these. Before: refused
    # "+experiment=digits_small,lenet", whose presets both train 20 epochs, for the default's 10.
    (["+experiment=digits_small,lenet"], False),
    (["scheduler=cosine,step"], False),
    # Unless the command line sets both keys, which wins over any preset.
    (["+experiment=digits_small,lenet", "scheduler.warmup_epochs=15", "trainer.epochs=10"], True),
    # A swept key that is null by default is a value like any other, not a preset.
    (["trainer.grad_clip_norm=0.5,1"], True),
])
def test_a_warm_up_longer_than_the_run_is_refused_before_the_sweep_only_when_every_job_shares_it(task, refused):
    problem = sweep_settings_problem(warmup_sweep(*task))
    assert (problem is not None and problem.startswith("scheduler.warmup_epochs=15 is longer than the run")) == refused


@pytest.mark.parametrize(("overrides", "swept", "refused"), [
    (["optimizer.momentum=2"], ["model.layers.conv1.out_channels"], "optimizer: SGD: momentum=2.0 is out of range"),
    (["optimizer.lr=-1"], ["trainer.batch_size"], "optimizer: SGD: lr=-1.0 is out of range"),
    # a job that sweeps an optimizer option or group builds an optimizer of its own: left to it
    (["optimizer.momentum=2"], ["optimizer.lr"], None),
    (["optimizer.momentum=2"], ["optimizer"], None),
])
def test_an_optimizer_option_every_job_refuses_is_refused_once(overrides, swept, refused):
    """It left one FAILED run per job of the sweep, each with the same error."""
    from hydra import compose, initialize_config_module

    from cnnx.app import check_settings
    from cnnx.errors import ConfigError

    with initialize_config_module("cnnx.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=digits_small", *overrides])
    if refused is None:
        check_settings(cfg, overrides, None, swept)
        return
    with pytest.raises(ConfigError, match=f"^{refused}"):
        check_settings(cfg, overrides, None, swept)
