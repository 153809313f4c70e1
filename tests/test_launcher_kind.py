from omegaconf import OmegaConf

from cnnx.launcher_kind import launcher_kind


def config(target):
    return OmegaConf.create({"hydra": {"launcher": {"_target_": target}}})


def test_a_launcher_is_told_by_its_class_whatever_its_config_file_is_named():
    plugins = "hydra_plugins."
    assert launcher_kind(config(plugins + "hydra_joblib_launcher.joblib_launcher.JoblibLauncher")) == "joblib"
    assert launcher_kind(config(plugins + "hydra_ray_launcher.ray_launcher.RayLauncher")) == "ray"
    assert launcher_kind(config(plugins + "hydra_submitit_launcher.submitit_launcher.SlurmLauncher")) == "submitit_slurm"
    assert launcher_kind(config(plugins + "hydra_submitit_launcher.submitit_launcher.LocalLauncher")) == "submitit_local"
    assert launcher_kind(config("hydra._internal.core_plugins.basic_launcher.BasicLauncher")) is None
    assert launcher_kind(config("my_lab.launchers.RayLikeLauncher")) is None
    assert launcher_kind(OmegaConf.create({})) is None
