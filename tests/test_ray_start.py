"""Ray started by cnnx before the Ray launcher (Ray itself is no test dependency: these check
the options it is started with; the README's Ray commands were run by hand against Ray 2.60)."""

from omegaconf import OmegaConf

from cnnx.ray_start import ray_init_options, ray_launcher


def launcher_config(**init):
    return OmegaConf.create({"hydra": {"launcher": {
        "_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
        "ray": {"init": {"address": None, **init}, "remote": {}}}}})


def test_a_local_instance_gets_the_launchers_object_store_default():
    config = launcher_config(num_cpus=2)
    assert ray_launcher(config)
    assert ray_init_options(config) == {"address": None, "num_cpus": 2, "object_store_memory": 78643200}


def test_joining_a_running_cluster_passes_no_object_store_size_ray_would_refuse():
    # "When connecting to an existing cluster, object_store_memory must not be provided."
    assert ray_init_options(launcher_config(address="auto")) == {"address": "auto"}
    assert ray_init_options(launcher_config(address="auto", object_store_memory=10**9)) == {
        "address": "auto", "object_store_memory": 10**9}  # set by the user: Ray says what it thinks


def test_other_launchers_are_left_alone():
    assert not ray_launcher(OmegaConf.create({"hydra": {"launcher": {
        "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}}}))
