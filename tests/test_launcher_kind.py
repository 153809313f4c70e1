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
    assert launcher_kind(config("hydra._internal.core_plugins.basic_launcher.BasicLauncher")) == "basic"
    assert launcher_kind(config("my_lab.launchers.RayLikeLauncher")) is None
    assert launcher_kind(OmegaConf.create({})) is None


def test_a_labs_own_subclass_of_a_launcher_is_of_that_launchers_kind(tmp_path, monkeypatch):
    # A lab's SLURM launcher in its own plugin package: its sweeps' jobs are SLURM jobs, which a
    # stopping sweep must cancel (matched by name, it was "no kind", and they trained on).
    package = tmp_path / "lab_launchers"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from hydra._internal.core_plugins.basic_launcher import BasicLauncher\n"
        "from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher\n"
        "class LabSlurmLauncher(SlurmLauncher):\n    pass\n"
        "class LabLocalLauncher(LocalLauncher):\n    pass\n"
        "class InProcess(BasicLauncher):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert launcher_kind(config("lab_launchers.LabSlurmLauncher")) == "submitit_slurm"
    assert launcher_kind(config("lab_launchers.LabLocalLauncher")) == "submitit_local"
    assert launcher_kind(config("lab_launchers.InProcess")) == "basic"
    assert launcher_kind(config("lab_launchers.NoSuchLauncher")) is None
