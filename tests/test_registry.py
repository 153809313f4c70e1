"""Entry-point discovery through real distribution metadata written to a tmp dir."""

import sys
import textwrap

import numpy as np
import pytest

from cnnx import registry
from cnnx.errors import ConfigError, PluginError


def install_fake_distribution(root, name, version, entry_points, module=None, source=""):
    """A minimal installed distribution (dist-info + module) that importlib.metadata finds."""
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    if module:
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    yield tmp_path
    registry.refresh()
    for mod in [m for m in sys.modules if m.startswith("fakeplug")]:
        del sys.modules[mod]


def test_builtins_are_registered_through_entry_points():
    assert {"conv2d", "dense", "maxpool2d", "residual", "batchnorm2d"} <= set(registry.layers.names())
    assert {"sgd", "adam", "adamw", "rmsprop"} <= set(registry.optimizers.names())
    assert {"cross_entropy", "bce", "mse"} <= set(registry.losses.names())
    assert {"digits", "synthetic", "npz"} <= set(registry.datasets.names())
    assert registry.layers.component("conv2d").distribution == "cnnx"


def test_unknown_name_lists_available_names_and_distribution():
    with pytest.raises(PluginError) as info:
        registry.layers.get("conv3d", "model.layers.c1")
    message = str(info.value)
    assert "unknown layer type 'conv3d' at model.layers.c1" in message
    assert "conv2d" in message and "(from cnnx " in message
    assert "\n" not in message


def test_plugin_from_another_distribution_is_found(plugin_path):
    install_fake_distribution(
        plugin_path, "fakeplug-ok", "1.2.3",
        "[cnnx.losses]\nfake_loss = fakeplug_ok:FakeLoss\n",
        "fakeplug_ok", "class FakeLoss:\n    def __init__(self, scale=1.0):\n        self.scale = scale\n",
    )
    component = registry.losses.component("fake_loss")
    assert (component.distribution, component.version) == ("fakeplug-ok", "1.2.3")
    assert registry.losses.create("fake_loss", {"scale": 2.0}, "loss").scale == 2.0
    assert "fakeplug-ok" in registry.plugin_distributions()


def test_two_distributions_claiming_one_name_is_an_error_naming_both(plugin_path):
    for dist in ("fakeplug-a", "fakeplug-b"):
        install_fake_distribution(plugin_path, dist, "0.1", "[cnnx.layers]\ntwin = somewhere:Twin\n")
    with pytest.raises(PluginError, match="fakeplug-a 0.1 and fakeplug-b 0.1"):
        registry.layers.get("twin", "model.layers.x")
    # The conflict breaks only that name.
    assert registry.layers.get("conv2d") is not None


def test_broken_plugin_breaks_only_its_own_name(plugin_path):
    install_fake_distribution(
        plugin_path, "fakeplug-broken", "0.2",
        "[cnnx.layers]\nbroken = fakeplug_broken:Broken\n",
        "fakeplug_broken", "import a_module_that_does_not_exist\n",
    )
    with pytest.raises(PluginError) as info:
        registry.layers.get("broken", "model.layers.b")
    message = str(info.value)
    assert "fakeplug-broken 0.2" in message and "a_module_that_does_not_exist" in message
    assert "broken" in registry.layers.names()
    assert registry.layers.get("dense") is not None


def test_create_rejects_unknown_and_missing_options_naming_the_key():
    with pytest.raises(ConfigError, match=r"unknown option optimizer\.lrr for optimizer 'sgd'; accepted: lr"):
        registry.optimizers.create("sgd", {"lrr": 0.1}, "optimizer", named_parameters=[])
    with pytest.raises(ConfigError, match=r"missing option model\.layers\.c1\.out_channels"):
        registry.layers.create("conv2d", {"kernel_size": 3}, "model.layers.c1")


def test_plugins_listing_shows_group_name_distribution_and_version():
    from cnnx.plugins import format_table

    table = format_table()
    assert "cnnx.layers" in table and "conv2d" in table and "cnnx" in table
    assert "cnnx.engine.layers.conv:Conv2D" in table


def test_a_plugin_claiming_a_builtin_name_is_told_to_rename_it(plugin_path):
    install_fake_distribution(plugin_path, "fakeplug-shadow", "0.3", "[cnnx.layers]\nrelu = somewhere:MyReLU\n")
    with pytest.raises(PluginError) as info:
        registry.layers.get("relu", "model.layers.relu1")
    assert str(info.value) == (
        "layer 'relu' at model.layers.relu1 is a cnnx built-in, and fakeplug-shadow 0.3 registers the "
        "same name; a plugin cannot replace a built-in: rename its entry point in 'cnnx.layers' (or "
        "uninstall fakeplug-shadow)")


def test_unknown_name_points_at_a_mistyped_group_and_a_close_name(plugin_path):
    install_fake_distribution(plugin_path, "fakeplug-typo", "0.4",
                              "[cnnx.layer]\nswish = somewhere:Swish\n[cnnx.layers]\nprelu = somewhere:PReLU\n")
    with pytest.raises(PluginError) as info:
        registry.layers.get("swish", "model.layers.act")
    assert str(info.value).startswith(
        "unknown layer type 'swish' at model.layers.act; fakeplug-typo registers 'swish' in the entry-point "
        "group 'cnnx.layer', but layers are read from 'cnnx.layers'; available: ")
    with pytest.raises(PluginError, match=r"^unknown layer type 'PReLU' at model.layers.act \(did you mean 'prelu'\?\); available"):
        registry.layers.get("PReLU", "model.layers.act")

    from cnnx.plugins import format_table, main

    [row] = [line for line in format_table().splitlines() if "swish" in line]
    assert row.split()[:4] == ["cnnx.layer", "swish", "fakeplug-typo", "0.4"]
    assert "← UNKNOWN GROUP: cnnx reads cnnx.layers, cnnx.losses" in row
    assert main(["--check"]) == 1


def test_a_name_missing_its_last_word_is_pointed_at_the_full_one(plugin_path):
    install_fake_distribution(plugin_path, "fakeplug-words", "0.1", "[cnnx.losses]\nhinge_loss = somewhere:Hinge\n")
    with pytest.raises(PluginError, match=r"^unknown loss type 'hinge' at loss \(did you mean 'hinge_loss'\?\)"):
        registry.losses.get("hinge", "loss")


def test_a_registered_component_without_a_config_file_is_named_with_how_to_select_it(plugin_path):
    from hydra import compose, initialize_config_module
    from hydra.errors import MissingConfigException

    from cnnx.cli import one_line

    install_fake_distribution(plugin_path, "fakeplug-noconf", "0.5", "[cnnx.optimizers]\nfake_opt = somewhere:Opt\n")
    messages = []
    for option in ("fake_opt", "not_installed"):
        with initialize_config_module("cnnx.conf", version_base="1.3"), pytest.raises(MissingConfigException) as info:
            compose("config", overrides=[f"optimizer={option}"])
        messages.append(one_line(info.value))
    assert messages[0].startswith("In 'config': Could not find 'optimizer/fake_opt'; available: ")
    assert messages[0].endswith(
        "; optimizer 'fake_opt' (from fakeplug-noconf 0.5) is installed, but no config optimizer/fake_opt.yaml "
        "is on the search path: use optimizer.type=fake_opt, or ship the file with a SearchPathPlugin "
        "(README: Write a plugin)")
    assert "is installed" not in messages[1] and "\n" not in messages[0]


def test_a_plugin_loader_that_cannot_read_its_file_fails_in_one_line(plugin_path):
    install_fake_distribution(
        plugin_path, "fakeplug-files", "0.6", "[cnnx.datasets]\nfrom_file = fakeplug_files:load\n",
        "fakeplug_files", "def load(path='/nonexistent/data.npz'):\n    return open(path, 'rb')\n",
    )
    with pytest.raises(ConfigError) as info:
        registry.datasets.create("from_file", {"path": "/nonexistent/mine.npz"}, "dataset")
    assert str(info.value) == ("dataset 'from_file' (from fakeplug-files 0.6) at dataset cannot read "
                               "'/nonexistent/mine.npz': No such file or directory")


def test_plugins_listing_into_a_closed_pipe_exits_quietly():
    # `cnnx plugins | head -2`: the reader may be gone before the table is written.
    import subprocess

    process = subprocess.Popen([sys.executable, "-m", "cnnx", "plugins"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141, stderr  # 128 + SIGPIPE, as the shell reports it
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


LOSS_SLIPS = '''
import numpy as np
from cnnx.engine.losses.base import Loss

class NumpyScalar(Loss):
    def compute(self, outputs, targets):
        return np.float32(outputs.mean()), np.zeros_like(outputs)

class PerSample(Loss):
    def compute(self, outputs, targets):
        return outputs.mean(axis=1), np.zeros_like(outputs)

class FlatGradient(Loss):
    def compute(self, outputs, targets):
        return 0.0, np.zeros(len(outputs), outputs.dtype)

class Crashes(Loss):
    def compute(self, outputs, targets):
        raise IndexError("index 9 is out of bounds")
'''


@pytest.mark.parametrize("name, problem", [
    ("numpy_scalar", None),
    ("per_sample", "the loss value has shape (2,); expected a scalar, the batch mean"),
    ("flat_gradient", "the gradient has shape (2,); expected the outputs' shape (2, 10)"),
    ("crashes", "fails on two training samples: IndexError: index 9 is out of bounds"),
])
def test_a_plugin_loss_breaking_the_contract_is_named_before_training(plugin_path, name, problem):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from cnnx.app import build_run

    install_fake_distribution(plugin_path, "fakeplug-losses", "0.2", textwrap.dedent("""
        [cnnx.losses]
        numpy_scalar = fakeplug_losses:NumpyScalar
        per_sample = fakeplug_losses:PerSample
        flat_gradient = fakeplug_losses:FlatGradient
        crashes = fakeplug_losses:Crashes
        """), module="fakeplug_losses", source=LOSS_SLIPS)
    with initialize_config_module("cnnx.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"loss.type={name}", "~loss.label_smoothing", "tracking=none"])
    config = OmegaConf.to_container(cfg, resolve=True)
    if problem is None:  # a NumPy scalar is a scalar: taken as a float, so checkpoints can hold it
        value, _ = registry.losses.create(name, {}, "loss")(np.zeros((2, 3), np.float32), np.zeros(2, int))
        assert type(value) is float
        build_run(config)
        return
    with pytest.raises(PluginError) as info:
        build_run(config)
    label = f"loss '{name}' (from fakeplug-losses 0.2)"
    assert str(info.value) == (f"{label}: {problem}" if not problem.startswith("fails") else f"{label} {problem}")


def test_a_factory_without_the_argument_cnnx_passes_is_told_its_name():
    from cnnx.engine.optim.sgd import SGD
    from cnnx.registry import check_options

    class TorchStyle(SGD):  # torch.optim's first argument is params
        def __init__(self, params, lr=0.01):
            super().__init__(params, lr=lr)

    with pytest.raises(PluginError) as info:
        check_options(TorchStyle, {"lr": 0.1}, "optimizer", "optimizer 'torch_style'", supplied={"named_parameters"})
    assert str(info.value) == ("optimizer 'torch_style' takes (params, lr), but cnnx passes it named_parameters=…; "
                               "name that argument named_parameters (README: Write a plugin)")


def test_a_distribution_visible_twice_reports_its_misplaced_entry_point_once(plugin_path, monkeypatch):
    # `pip install .` leaves an egg-info in the plugin's source folder, which is on sys.path
    # when commands run from there.
    source = plugin_path / "source"
    for root in (plugin_path, source):
        install_fake_distribution(root, "fakeplug-twice", "0.1", "[cnnx.layer]\nswish = somewhere:Swish\n")
    monkeypatch.syspath_prepend(str(source))
    registry.refresh()
    found = [ep for ep in registry.misplaced_entry_points() if ep.name == "swish"]
    assert len(found) == 1


REBINDING_OPTIMIZER = '''
from cnnx.engine.optim.optimizer import Optimizer

class RebindsState(Optimizer):
    """Momentum whose state is rebound, not updated in place: the flat path loses it."""
    elementwise = True

    def __init__(self, named_parameters, lr=0.1):
        super().__init__(named_parameters, lr)

    def slots(self):
        return ("m",)

    def _update(self, data, grad, state, scratch, lr):
        state["m"] = 0.9 * state["m"] + grad
        data -= lr * state["m"]
'''


def test_the_kit_catches_optimizer_state_lost_when_parameters_share_a_buffer(plugin_path):
    from cnnx.testing.conformance import check_optimizer

    install_fake_distribution(plugin_path, "fakeplug-optim", "0.3", "[cnnx.optimizers]\nrebinds = fakeplug_optim:RebindsState\n",
                              module="fakeplug_optim", source=REBINDING_OPTIMIZER)
    with pytest.raises(AssertionError) as info:
        check_optimizer("rebinds", {"lr": 0.1})
    assert "save/restore with the parameters in one buffer, as a model's" in str(info.value)


def test_an_optimizer_that_skips_the_base_init_is_named_before_training(plugin_path):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from cnnx.app import build_run

    install_fake_distribution(plugin_path, "fakeplug-nosuper", "0.1", "[cnnx.optimizers]\nno_super = fakeplug_nosuper:NoSuper\n",
                              module="fakeplug_nosuper", source=(
                                  "from cnnx.engine.optim.sgd import SGD\n"
                                  "class NoSuper(SGD):\n"
                                  "    def __init__(self, named_parameters, lr=0.1):\n"
                                  "        self.lr = lr\n"))
    with initialize_config_module("cnnx.conf", version_base="1.3"):
        cfg = compose("config", overrides=["optimizer.type=no_super", "~optimizer.momentum", "~optimizer.nesterov",
                                           "~optimizer.weight_decay", "tracking=none"])
    with pytest.raises(PluginError) as info:
        build_run(OmegaConf.to_container(cfg, resolve=True))
    assert str(info.value) == ("optimizer 'no_super' (from fakeplug-nosuper 0.1): NoSuper.__init__ must call "
                               "super().__init__(named_parameters, lr) (Optimizer sets up params, lr and state there)")
