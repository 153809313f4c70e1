"""An option file that is not YAML is named by the option the user typed, also when it lies in a
sub-folder of its group (``model=cnn/x``, never ``model/cnn=x``, which Hydra refuses)."""

from __future__ import annotations

import pytest
import yaml

from cnnx.option_file_yaml import load_problem

UNCLOSED = "name: broken\nlayers:\n  conv1: {type: conv2d, out_channels: 8\n"


@pytest.fixture
def own_folder(tmp_path):
    """The user's folder (hydra.searchpath) with a malformed model/cnn/x.yaml."""
    (tmp_path / "model" / "cnn").mkdir(parents=True)
    (tmp_path / "model" / "cnn" / "x.yaml").write_text(UNCLOSED)
    return f"file://{tmp_path}"


def expected(folder: str) -> str:
    return (f"model=cnn/x: {folder}/model/cnn/x.yaml line 3: expected ',' or '}}', but got '<stream end>' at "
            f"line 4 (while parsing a flow mapping)")


def test_a_run_names_a_malformed_option_in_a_sub_folder_as_typed(own_folder):
    from hydra import compose, initialize_config_module

    from cnnx.cli import one_line
    from cnnx.config_schema import register
    from cnnx.plugin_configs import CNNX_CONFIG_NAME, CNNX_VERSION_BASE

    register()  # cnnx's config names its schema, which cnnx.app registers
    with initialize_config_module("cnnx.conf", version_base=CNNX_VERSION_BASE), \
            pytest.raises(yaml.YAMLError) as info:
        compose(CNNX_CONFIG_NAME, overrides=["model=cnn/x", f"hydra.searchpath=[{own_folder}]"])
    assert one_line(info.value) == expected(own_folder)


def test_a_sweep_names_a_malformed_option_in_a_sub_folder_as_typed(own_folder):
    """A sweep loads the option files its jobs will choose before it starts (cnnx.sweep_settings)."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the pkg:// and file:// sources
    path = ConfigSearchPathImpl()
    path.append("main", "pkg://cnnx.conf")
    path.append("hydra.searchpath in command-line", own_folder)
    assert load_problem(ConfigRepository(path), "model/cnn/x") == expected(own_folder)
