"""Plugins' config groups join cnnx's Hydra app, and no other Hydra app in the environment."""

from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

from cnnx.plugin_configs import add_plugin_configs


def search_path(main: str) -> ConfigSearchPathImpl:
    path = ConfigSearchPathImpl()
    path.append("hydra", "pkg://hydra.conf")
    path.append("main", main)
    return path


def test_added_after_cnnx_configs_in_either_spelling_hydra_uses():
    for main in ("pkg://cnnx/conf", "pkg://cnnx.conf"):
        path = search_path(main)
        add_plugin_configs(path, "my-plugin", "my_plugin.conf")
        assert [(e.provider, e.path) for e in path.get_path()][-1] == ("my-plugin", "pkg://my_plugin.conf")


def test_other_hydra_apps_are_left_alone():
    for main in ("pkg://someone_else/conf", "file:///home/me/project/conf"):
        path = search_path(main)
        add_plugin_configs(path, "my-plugin", "my_plugin.conf")
        assert [e.provider for e in path.get_path()] == ["hydra", "main"]
