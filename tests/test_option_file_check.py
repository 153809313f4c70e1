"""``cnnx plugins --check`` loads every option file a plugin ships and names what a run choosing
it would stop with, or why no run can choose it."""

from __future__ import annotations

import pytest
from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

from cnnx.option_file_check import config_groups, option_file_problem
from cnnx.plugin_configs import plugin_option_files

#: A plugin's option files, each wrong in its own way (the reviewer's cnnx-rvbad), and one right.
FILES = {
    "model/broken_yaml": "name: broken\nlayers:\n  conv1: {type: conv2d, out_channels: 8\n",
    "losss/typo_group": "type: cross_entropy\n",
    "loss/unregistered": "type: not_registered\n",
    "loss/option_typo": "type: cross_entropy\nlabel_smoothin: 0.1\n",
    "model/not_a_model": "conv1: {type: conv2d, out_channels: 8, kernel_size: 3}\nfc: {type: dense, out_features: 10}\n",
    "model/block_typo": "layers:\n  b: {type: residual, layers: {c: {type: conv2d, out_channels: 4, kernel_size: 3, "
                        "padd: 1}}}\n",
    "experiment/preset_typo": "# @package _global_\ndefaults:\n  - override /model: lenet5\noptimizer:\n  type: sgdd\n",
    "optimizer/fine": "defaults:\n  - sgd\n  - _self_\ntype: sgd\nmomentum: 0.5\n",
    # Right too, though --check called them wrong: a model that takes its layers from the one it
    # extends, and a plugin's own group of presets, which +presets=fast chooses.
    "model/lenet_renamed": "defaults:\n  - lenet5\n  - _self_\nname: lenet_renamed\n",
    "presets/fast": "# @package _global_\ntrainer:\n  epochs: 1\n",
    "presetss/not_global": "trainer:\n  epochs: 1\n",
    "model/cnn/small": "name: nested\nlayers:\n  fc: {type: dense, out_features: 10}\n",  # model=cnn/small
    "experiments/fast": "# @package _global_\ntrainer:\n  epochs: 1\n",  # close to experiment/, reachable
    "model/self_only": "defaults:\n  - _self_\nname: nolayers\n",  # extends nothing: layers missing
}


def search_path(plugin_dir: str) -> ConfigSearchPathImpl:
    path = ConfigSearchPathImpl()
    path.append("hydra", "pkg://hydra.conf")
    path.append("main", "pkg://cnnx.conf")
    path.append("my-plugin", plugin_dir)
    path.append("schema", "structured://")
    return path


@pytest.fixture
def problems(tmp_path):
    for option, text in FILES.items():
        (tmp_path / f"{option}.yaml").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{option}.yaml").write_text(text)
    path = search_path(f"file://{tmp_path}")
    groups = config_groups(path)
    return {f.option: option_file_problem(f, groups) for f in plugin_option_files(path)}, f"file://{tmp_path}"


def test_each_wrong_option_file_is_named_with_what_a_run_would_say(problems):
    found, where = problems
    assert found["model/broken_yaml"] == (
        "BROKEN", f"model=broken_yaml: {where}/model/broken_yaml.yaml line 3: expected ',' or '}}', but got "
                  "'<stream end>' at line 4 (while parsing a flow mapping)")
    word, message = found["losss/typo_group"]
    assert word == "UNKNOWN GROUP" and message.startswith(
        f"{where}/losss/typo_group.yaml: folder losss/ is no config group of cnnx's (did you mean loss/?), so no "
        "override chooses this file; cnnx's groups: dataset, experiment,")
    assert found["loss/unregistered"][0] == "BROKEN" and found["loss/unregistered"][1].startswith(
        f"loss=unregistered: {where}/loss/unregistered.yaml: unknown loss type 'not_registered' at loss; available: ")
    assert found["loss/option_typo"] == (
        "BROKEN", f"loss=option_typo: {where}/loss/option_typo.yaml: unknown option loss.label_smoothin for loss "
                  "'cross_entropy'; accepted: label_smoothing (set by a preset or another group? drop it with "
                  "~loss.label_smoothin)")
    assert found["model/not_a_model"] == (
        "BROKEN", f"model=not_a_model: {where}/model/not_a_model.yaml: a model option file needs a layers: mapping "
                  "(layer name → {type: ..., ...}); its keys: conv1, fc")
    assert found["model/block_typo"][1].startswith(
        f"model=block_typo: {where}/model/block_typo.yaml: unknown option model.layers.b.layers.c.padd for layer "
        "'conv2d'; accepted: ")
    assert found["experiment/preset_typo"][1].startswith(
        f"experiment=preset_typo: {where}/experiment/preset_typo.yaml: unknown optimizer type 'sgdd' at optimizer "
        "(did you mean 'sgd'?)")
    assert found["optimizer/fine"] is None  # lr comes from the sgd defaults it extends
    assert found["model/lenet_renamed"] is None and found["presets/fast"] is None
    assert found["presetss/not_global"][0] == "UNKNOWN GROUP"  # a package of its own: under a group none reads
    assert found["model/cnn/small"] is None and found["experiments/fast"] is None
    assert found["model/self_only"][0] == "BROKEN" and "needs a layers: mapping" in found["model/self_only"][1]


def test_every_option_file_cnnx_ships_passes_the_check():
    """What cnnx's own files do (presets, defaults lists, interpolations) is what plugins copy."""
    path = search_path("pkg://cnnx.conf")  # cnnx's files read as a plugin's: the check sees each
    groups = config_groups(path)
    found = {f.option: option_file_problem(f, groups) for f in plugin_option_files(path)}
    assert "model/lenet5" in found and "experiment/lenet" in found
    assert {option: problem for option, problem in found.items() if problem is not None} == {}


def test_a_file_naming_a_component_another_plugin_breaks_is_not_blamed_for_it(tmp_path, monkeypatch):
    """The entry points' rows name a claim on a built-in's name; the file using the name is fine."""
    from test_registry import install_fake_distribution

    from cnnx import registry

    install_fake_distribution(tmp_path / "site", "fakeplug-claims-relu", "0.1", "[cnnx.layers]\nrelu = nowhere:ReLU\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry.refresh()
    try:
        files = {"model/uses_relu": "layers:\n  r: {type: relu}\n  bad: {type: relu, slope: 1}\n",
                 "loss/unknown": "type: not_registered\n"}
        for option, text in files.items():
            (tmp_path / "conf" / f"{option}.yaml").parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "conf" / f"{option}.yaml").write_text(text)
        path = search_path(f"file://{tmp_path / 'conf'}")
        found = {f.option: option_file_problem(f, config_groups(path)) for f in plugin_option_files(path)}
        assert found["model/uses_relu"] is None
        assert found["loss/unknown"][0] == "BROKEN"
    finally:
        monkeypatch.undo()
        registry.refresh()
