"""``cnnx plugins --check`` loads every option file a plugin ships and names what a run choosing
it would stop with, or why no run can choose it: its own lines, then the run Hydra composes."""

from __future__ import annotations

import pytest
from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

from cnnx import plugins
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


def problems_on(path: ConfigSearchPathImpl) -> dict[str, tuple[str, str] | None]:
    """What the check finds wrong with each option file plugins add to ``path``, by its path."""
    from cnnx.option_file_compose import OptionComposer

    groups, composer = config_groups(path), OptionComposer(path)
    return {f.option: option_file_problem(f, groups, composer) for f in plugin_option_files(path)}


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
    return problems_on(search_path(f"file://{tmp_path}")), f"file://{tmp_path}"


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
                  "'cross_entropy'; accepted: label_smoothing, weight (set by a preset or another group? drop it with "
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
    found = problems_on(search_path("pkg://cnnx.conf"))  # cnnx's files read as a plugin's: the check sees each
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
        found = problems_on(search_path(f"file://{tmp_path / 'conf'}"))
        assert found["model/uses_relu"] is None
        assert found["loss/unknown"][0] == "BROKEN"
    finally:
        monkeypatch.undo()
        registry.refresh()


#: A plugin's options extending cnnx's own: each line is fine alone; the run each composes is not.
EXTENDING = {
    "model/kernel_typo": "defaults:\n  - lenet5\n  - _self_\nlayers:\n  conv1: {kernel_sz: 3}\n",
    "model/type_key_typo": "defaults:\n  - lenet5\n  - _self_\nlayers:\n  relu1: {tpye: tanh}\n",
    "model/retyped": "defaults:\n  - lenet5\n  - _self_\nlayers:\n  fc3: {type: tanh}\n",  # keeps out_features
    "model/no_base": "defaults:\n  - lenet6\n  - _self_\nname: no_base\n",
    "model/cnn/nested_typo": "defaults:\n  - /model/lenet5@_here_\n  - _self_\nlayers:\n  conv2: {padd: 1}\n",
    "optimizer/adam_momentum": "defaults:\n  - adam\n  - _self_\nmomentum: 0.5\n",
    # Caught before too: the typo is in the file's own line.
    "model/type_typo": "defaults:\n  - lenet5\n  - _self_\nlayers:\n  conv1: {type: conv2dd}\n",
    "model/wider": "defaults:\n  - lenet5\n  - _self_\nname: wider\nlayers:\n  conv1: {out_channels: 12}\n"
                   "  drop: {type: dropout, p: 0.1}\n",
}


def check_rows(monkeypatch, plugin_dir) -> dict[str, str]:
    """``cnnx plugins --check``'s verdict on each option file in ``plugin_dir``, by its override:
    "ok", or what follows its ← in the table."""
    for option, text in EXTENDING.items():
        (plugin_dir / f"{option}.yaml").parent.mkdir(parents=True, exist_ok=True)
        (plugin_dir / f"{option}.yaml").write_text(text)
    monkeypatch.setattr(plugins, "installed_search_path", lambda: search_path(f"file://{plugin_dir}"))
    rows = [line for line in plugins.format_table(check=True).splitlines() if line.startswith("config ")]
    return {row.split()[1]: row.partition(".yaml   ")[2].removeprefix("← ") for row in rows}


def test_an_option_extending_another_is_checked_as_hydra_composes_it(tmp_path, monkeypatch):
    said = {  # each row's start, after the option and its file
        "model=kernel_typo": "unknown option model.layers.conv1.kernel_sz for layer 'conv2d'; accepted: out_channels, ",
        "model=type_key_typo": "unknown option model.layers.relu1.tpye for layer 'relu'",
        "model=retyped": "unknown option model.layers.fc3.out_features for layer 'tanh'",
        "model=no_base": "In 'model/no_base': Could not load 'model/lenet6'.",
        "model=cnn/nested_typo": "unknown option model.layers.conv2.padd for layer 'conv2d'",
        "optimizer=adam_momentum": "unknown option optimizer.momentum for optimizer 'adam'",
        "model=type_typo": "unknown layer type 'conv2dd' at model.layers.conv1 (did you mean 'conv2d'?)",
    }
    found = check_rows(monkeypatch, tmp_path)
    wrong = {override: found[override] for override, problem in said.items() if not found[override].startswith(
        f"BROKEN: {override}: file://{tmp_path}/{override.replace('=', '/')}.yaml: {problem}")}
    assert wrong == {}
    assert found["model=wider"] == "ok"


def test_a_plain_option_file_is_also_checked_against_the_settings_schema_a_run_applies(tmp_path, monkeypatch):
    """trainer.epochs: many passed: its own lines name no component, and only composition
    applies the schema that types cnnx's settings."""
    files = {"trainer/typed": "epochs: many\n", "trainer/misspelt": "epochz: 3\n",
             "tracking/flag": "log_plots: maybe\n", "trainer/fine": "epochs: 3\n"}
    for option, text in files.items():
        (tmp_path / f"{option}.yaml").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{option}.yaml").write_text(text)
    found = problems_on(search_path(f"file://{tmp_path}"))
    assert found["trainer/fine"] is None
    for option in ("trainer/typed", "trainer/misspelt", "tracking/flag"):
        word, message = found[option]
        assert (word, message.split(": ", 1)[0]) == ("BROKEN", option.replace("/", "="))
    assert "epochz" in found["trainer/misspelt"][1] and "maybe" in found["tracking/flag"][1]
