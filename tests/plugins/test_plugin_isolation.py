"""A broken plugin distribution breaks only its own names, each with a message naming it; the
conformance kit catches its wrong backward. The distribution is pip-installed with
``--target`` into a folder that only these tests see (sys.path here, PYTHONPATH for the CLI),
never into the shared environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import all_runs, run_cli
from plugin_install import pip_install

from cnnx import registry
from cnnx.errors import PluginError
from cnnx.testing.conformance import check_layer

BROKEN = Path(__file__).resolve().parent / "broken_plugin"
ORIGIN = "cnnx-broken-example 0.1.0"


@pytest.fixture(scope="module")
def broken_target(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("broken-plugin-site")
    pip_install([BROKEN], tmp_path_factory.mktemp("broken-plugin-source"), "--target", str(target))
    return target


@pytest.fixture
def broken_visible(installed_plugins, broken_target, monkeypatch):
    monkeypatch.syspath_prepend(str(broken_target))
    registry.refresh()
    yield broken_target
    monkeypatch.undo()
    registry.refresh()
    for name in [m for m in sys.modules if m.startswith("cnnx_broken_example")]:
        del sys.modules[name]


def test_conformance_kit_catches_a_wrong_backward(broken_visible):
    with pytest.raises(AssertionError) as info:
        check_layer("wrong_backward", {"out_features": 3}, (4,))
    message = str(info.value)
    assert f"layer 'wrong_backward' (from {ORIGIN}) fails float64 finite-difference gradients" in message
    assert "gradient of parameter 'weight' is wrong" in message
    # The same check passes the layer it was copied from.
    check_layer("dense", {"out_features": 3}, (4,))


@pytest.mark.parametrize(("name", "fragment"), [
    ("not_a_layer", f"layer 'not_a_layer' from distribution {ORIGIN} points at cnnx_broken_example:not_a_layer, "
                    "which is the function 'not_a_layer', not a subclass of cnnx.engine.module.Module"),
    ("missing_module", f"layer 'missing_module' from distribution {ORIGIN} failed to import "
                       "(cnnx_broken_example.missing:Layer): ModuleNotFoundError"),
    ("sigmoid", f"layer 'sigmoid' at model.layers.x is registered by more than one distribution "
                f"(cnnx 0.1.0 and {ORIGIN}); uninstall one of them"),
])
def test_each_broken_name_fails_alone_naming_the_distribution(broken_visible, name, fragment):
    with pytest.raises(PluginError) as info:
        registry.layers.get(name, "model.layers.x")
    assert fragment in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(PluginError, match=f"optimizer 'import_fails' from distribution {ORIGIN} failed to import"):
        registry.optimizers.get("import_fails")
    # Everything else still loads: cnnx's own names and the other plugins'.
    for other in ("conv2d", "dense", "relu", "separable_conv2d"):
        assert registry.layers.get(other) is not None
    assert registry.optimizers.get("lamb") is not None


@pytest.mark.slow
def test_cli_trains_next_to_a_broken_plugin_and_names_it_when_used(installed_plugins, broken_target, tmp_path):
    env = {"PYTHONPATH": str(broken_target)}
    listing = subprocess.run([sys.executable, "-m", "cnnx.plugins", "--check"], capture_output=True,
                             text=True, env={**os.environ, **env}, timeout=120)
    assert listing.returncode == 1, listing.stderr
    lines = listing.stdout.splitlines()
    assert [line.split()[:3] for line in lines if "CONFLICT" in line] == [
        ["cnnx.layers", "sigmoid", "cnnx"], ["cnnx.layers", "sigmoid", "cnnx-broken-example"]]
    assert sorted(line.split()[1] for line in lines if "BROKEN" in line) == [
        "import_fails", "missing_module", "not_a_layer"]
    assert all(line.split()[2] == "cnnx-broken-example" for line in lines if "BROKEN" in line)
    # Everything else, the other plugins included, imports fine.
    assert all(line.endswith(" ok") for line in lines[1:] if "CONFLICT" not in line and "BROKEN" not in line)

    common = ["trainer.epochs=1"]
    (tmp_path / "ok").mkdir()
    # cnnx and the other plugin (a layer and the dataset=augmented config group) still work;
    # tracking off, as what is under test is building and training.
    trained = run_cli([*common, "model.layers.conv2.type=separable_conv2d", "dataset=augmented",
                       "tracking=none"], tmp_path / "ok", env=env)
    assert trained.returncode == 0, trained.stderr
    output = trained.stdout + trained.stderr
    assert "SeparableConv2D" in output and "test_acc=" in output

    (tmp_path / "bad").mkdir()
    failed = run_cli([*common, "model.layers.relu1.type=missing_module"], tmp_path / "bad", env=env)
    assert failed.returncode == 2
    errors = [line for line in failed.stderr.splitlines() if line.startswith("cnnx: error:")]
    assert errors == [
        f"cnnx: error: layer 'missing_module' from distribution {ORIGIN} failed to import "
        "(cnnx_broken_example.missing:Layer): ModuleNotFoundError: No module named 'cnnx_broken_example.missing'"
    ], failed.stderr
    assert "Traceback" not in failed.stderr
    assert all(r.info.status != "RUNNING" for r in all_runs(tmp_path / "bad"))
