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


def option_dir(root, files: dict[str, str]) -> str:
    for option, text in files.items():
        (root / f"{option}.yaml").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{option}.yaml").write_text(text)
    return f"file://{root}"


def test_option_files_named_like_an_earlier_one_are_named_as_never_read(tmp_path):
    """Hydra reads the first file of a name on its search path: a plugin's optimizer/adam.yaml
    loses to cnnx's own, and of two plugins shipping optimizer/fast.yaml the second loses."""
    from cnnx.plugin_configs import plugin_option_files

    path = search_path("pkg://cnnx.conf")
    path.append("my-plugin", option_dir(tmp_path / "a", {"optimizer/adam": "type: my_adam\n",
                                                         "optimizer/fast": "type: fast\n"}))
    path.append("other-plugin", option_dir(tmp_path / "b", {"optimizer/fast": "type: fast2\n",
                                                            "loss/own": "type: own\n"}))
    path.append("schema", "structured://")
    found = {(f.distribution, f.option): f for f in plugin_option_files(path)}
    assert sorted(found) == [("my-plugin", "optimizer/adam"), ("my-plugin", "optimizer/fast"),
                             ("other-plugin", "loss/own"), ("other-plugin", "optimizer/fast")]
    assert found["my-plugin", "optimizer/adam"].shadowed_message() == (
        f"optimizer=adam reads cnnx's own optimizer/adam.yaml, never the file of that name in plugin "
        f"distribution my-plugin (file://{tmp_path / 'a'}); rename that option file")
    assert found["other-plugin", "optimizer/fast"].shadowed_message() == (
        f"optimizer=fast reads my-plugin's optimizer/fast.yaml, never the file of that name in plugin "
        f"distribution other-plugin (file://{tmp_path / 'b'}); rename that option file")
    assert found["my-plugin", "optimizer/fast"].shadowed_message() is None
    assert found["other-plugin", "loss/own"].shadowed_message() is None


def test_an_option_in_a_sub_folder_is_listed_as_a_user_types_it(tmp_path):
    """model/cnn/small.yaml is chosen with model=cnn/small: Hydra refuses model/cnn=small, as no
    defaults list chooses a model/cnn. The user's own folder having model/cnn/ changes nothing."""
    from cnnx.plugin_configs import plugin_option_files

    path = search_path("pkg://cnnx.conf")
    files = {"model/cnn/small": "name: small\n", "model/cnn/deep/big": "name: big\n", "model/flat": "name: flat\n",
             "hydra/launcher/mine": "n: 1\n", "losss/typo": "type: mse\n"}
    path.append("hydra.searchpath in command-line", option_dir(tmp_path / "own", {"model/cnn/mine": "name: m\n"}))
    path.append("my-plugin", option_dir(tmp_path / "plugin", files))
    path.append("schema", "structured://")
    listed = {f.option: f.override for f in plugin_option_files(path)}
    assert listed == {"model/cnn/small": "model=cnn/small", "model/cnn/deep/big": "model=cnn/deep/big",
                      "model/flat": "model=flat", "hydra/launcher/mine": "hydra/launcher=mine",
                      "losss/typo": "losss=typo"}
