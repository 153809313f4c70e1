"""A broken plugin distribution breaks only its own names, each with a message naming it; the
conformance kit catches its wrong backward. The distribution is pip-installed with
``--target`` into a folder that only these tests see (sys.path here, PYTHONPATH for the CLI),
never into the shared environment."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from e2e_helpers import all_runs, run_cli, run_cli_many
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


def cli_env(broken_target: Path) -> dict[str, str]:
    # Prepended: a PYTHONPATH already set (a checkout tested without installing it) still applies.
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(broken_target), os.environ.get("PYTHONPATH")]))}


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


@pytest.mark.parametrize(("name", "check", "fragment"), [
    ("doubles_in_place", "forward leaving its input intact", "forward(training=True) modified its input x in place"),
    ("doubles_gradient_in_place", "backward leaving grad_output intact", "backward modified grad_output in place"),
    ("sigmoid_claims_none", "its backward_reads_output declaration",
     "the gradient of input changes when the output is overwritten before backward"),
    ("tanh_claims_sign", "its backward_reads_output declaration",
     "backward_reads_output = OutputUse.SIGN declares that backward reads only which entries are positive"),
])
def test_conformance_kit_catches_a_broken_memory_contract(broken_visible, name, check, fragment):
    """Each of these passes the gradient checks on its own and trains with wrong gradients in
    a model: after tanh, in a residual block, or before an inplace=True layer."""
    with pytest.raises(AssertionError) as info:
        check_layer(name, {}, (2, 3, 3))
    message = str(info.value)
    assert message.startswith(f"cnnx conformance: layer {name!r} (from {ORIGIN}) fails {check}: "), message
    assert fragment in message


FORGETS_GEOMETRY = {"out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1}


@pytest.mark.parametrize(("input_shape", "calls"), [
    ((2, 6, 6), "called at input (2, 5, 5) after (2, 6, 6)"),  # 5×5 reads what 6×6 left in its padding
    ((2, 7, 7), "called at input (2, 7, 7) after (2, 8, 8)"),  # there 8×8 writes it, and back at 7×7 it is read
])
def test_conformance_kit_catches_a_buffer_reused_at_another_input_size(broken_visible, input_shape, calls):
    """A column buffer taken from a Workspace without geometry= passes every check made at
    one input size, and gives wrong outputs and gradients at a second size of the same
    output shape."""
    with pytest.raises(AssertionError) as info:
        check_layer("forgets_geometry", FORGETS_GEOMETRY, input_shape)
    message = str(info.value)
    assert message.startswith(f"cnnx conformance: layer 'forgets_geometry' (from {ORIGIN}) fails calls at another "
                              f"input size: {calls}, its training output differs by up to "), message
    assert message.endswith("from that of a copy built for that size and called at that size only, so an array "
                            "it reuses between calls keeps values from the other size (a Workspace buffer whose "
                            "fill some positions must keep needs geometry=, e.g. the input's (height, width))"), message
    assert "\n" not in message
    # Given geometry=, the same layer passes.
    check_layer("forgets_geometry", {**FORGETS_GEOMETRY, "geometry": True}, input_shape)


@pytest.mark.parametrize(("name", "options"), [("position_bias", {}), ("flatten_dense", {"out_features": 3})])
def test_conformance_kit_passes_a_layer_that_takes_only_the_input_size_it_was_built_for(broken_visible, name, options):
    """Such a layer refuses another size with a ValueError (NumPy's, or the ShapeError of
    cnnx's dense layer), as a model after flatten and dense must; the kit does not fail it."""
    check_layer(name, options, (2, 4, 4))


@pytest.mark.parametrize(("name", "fragment"), [
    ("not_a_layer", f"layer 'not_a_layer' from distribution {ORIGIN} points at cnnx_broken_example:not_a_layer, "
                    "which is the function 'not_a_layer', not a subclass of cnnx.engine.module.Module"),
    ("missing_module", f"layer 'missing_module' from distribution {ORIGIN} failed to import "
                       "(cnnx_broken_example.missing:Layer): ModuleNotFoundError"),
    ("sigmoid", f"layer 'sigmoid' at model.layers.x is a cnnx built-in, and {ORIGIN} registers the "
                "same name; a plugin cannot replace a built-in: rename its entry point in 'cnnx.layers' "
                "(or uninstall cnnx-broken-example)"),
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
    env = cli_env(broken_target)
    listing = subprocess.run([sys.executable, "-m", "cnnx.plugins", "--check"], capture_output=True,
                             text=True, env={**os.environ, **env}, timeout=120)
    assert listing.returncode == 1, listing.stderr
    lines = listing.stdout.splitlines()
    assert [line.split()[:3] for line in lines if "CONFLICT" in line] == [
        ["cnnx.layers", "sigmoid", "cnnx"], ["cnnx.layers", "sigmoid", "cnnx-broken-example"]]
    assert sorted(line.split()[1] for line in lines if "BROKEN" in line and not line.startswith("config ")) == [
        "import_fails", "missing_module", "not_a_layer"]
    assert all(line.split()[2] == "cnnx-broken-example" for line in lines if "BROKEN" in line)
    # Its option files a run cannot use, each with what a run choosing it would say.
    files = {line.split()[1]: line for line in lines if line.startswith("config ") and "cnnx-broken-example" in line}
    conf = "pkg://cnnx_broken_example.conf"
    assert files["model=broken_yaml"].endswith(
        f"← BROKEN: model=broken_yaml: {conf}/model/broken_yaml.yaml line 4: expected ',' or '}}', but got "
        "'<stream end>' at line 5 (while parsing a flow mapping)")
    assert f"← UNKNOWN GROUP: {conf}/losss/typo_group.yaml: folder losss/ is no config group of cnnx's (did you " \
           "mean loss/?)" in files["losss=typo_group"]
    assert f"← BROKEN: loss=unregistered: {conf}/loss/unregistered.yaml: unknown loss type 'not_registered' at " \
           "loss; available: " in files["loss=unregistered"]
    assert files["loss=option_typo"].endswith(
        f"← BROKEN: loss=option_typo: {conf}/loss/option_typo.yaml: unknown option loss.label_smoothin for loss "
        "'cross_entropy'; accepted: label_smoothing, weight (set by a preset or another group? drop it with "
        "~loss.label_smoothin)")
    # Everything else, the other plugins included, imports fine.
    assert all(line.endswith(" ok") for line in lines[1:]
               if not any(f"← {word}" in line for word in ("CONFLICT", "BROKEN", "SHADOWED", "UNKNOWN GROUP")))

    common = ["trainer.epochs=1"]
    (tmp_path / "ok").mkdir()
    # cnnx and the other plugin (a layer and the dataset=augmented config group) still work;
    # tracking off, as what is under test is building and training.
    trained = run_cli([*common, "model.layers.conv2.type=separable_conv2d", "dataset=augmented",
                       "tracking=none"], tmp_path / "ok", env=env)
    assert trained.returncode == 0, trained.stderr
    output = trained.stdout + trained.stderr
    assert "SeparableConv2D" in output and "test_acc=" in output
    assert "cnnx: warning" not in output  # its shadowed option files are not chosen here
    # Using a broken name: test_plugin_slips_stop_the_run_in_one_line_naming_the_plugin.


@pytest.mark.slow
def test_an_option_file_named_like_an_earlier_one_is_named_in_the_listing_and_when_chosen(
        installed_plugins, broken_target, tmp_path):
    """The plugin ships optimizer/adam.yaml (cnnx's own is read) and optimizer/lamb.yaml
    (cnnx-contrib ships one too; Hydra reads whichever plugin it finds first)."""
    env = cli_env(broken_target)
    adam = ("optimizer=adam reads cnnx's own optimizer/adam.yaml, never the file of that name in plugin "
            f"distribution {ORIGIN} (pkg://cnnx_broken_example.conf); rename that option file")
    listing = subprocess.run([sys.executable, "-m", "cnnx.plugins"], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=120)
    assert listing.returncode == 0, listing.stderr
    shadowed = {line.split()[1]: line for line in listing.stdout.splitlines() if "SHADOWED" in line}
    assert sorted(shadowed) == ["optimizer=adam", "optimizer=lamb"], listing.stdout
    assert shadowed["optimizer=adam"].split()[:4] == ["config", "optimizer=adam", "cnnx-broken-example", "0.1.0"]
    assert shadowed["optimizer=adam"].endswith(f"← SHADOWED: {adam}")
    assert ORIGIN in shadowed["optimizer=lamb"] and f"cnnx-contrib {version('cnnx-contrib')}" in shadowed["optimizer=lamb"]

    # Told once when chosen, before training: in a run, and in a sweep whose jobs all choose it.
    common = ["optimizer=adam", "trainer.epochs=1", "tracking=none"]
    (tmp_path / "run").mkdir()
    (tmp_path / "sweep").mkdir()
    results = run_cli_many([(common, tmp_path / "run"),
                            (["-m", *common, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path / "sweep")],
                           env=env, timeout=300)
    for result in results:
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("cnnx: warning")]
        assert warnings == [f"cnnx: warning: {adam}"], result.stderr


#: A plugin's slips a run cannot train on: each stops before training in one line naming the
#: component, its config key or distribution, and what cnnx expected.
SLIPS = [
    ("layer whose module is missing", ["model.layers.relu1.type=missing_module"],
     [f"cnnx: error: layer 'missing_module' from distribution {ORIGIN} failed to import "
      "(cnnx_broken_example.missing:Layer): ModuleNotFoundError: No module named 'cnnx_broken_example.missing'"]),
    ("layer computing in float64", ["model.layers.relu1.type=float64_output"],
     [f"layer 'float64_output' at model.layers.relu1 (from {ORIGIN}): forward returned float64 "
      "for float32 input; expected float32"]),
    ("layer refusing its input with ValueError in _build", ["model.layers.relu1.type=rejects_input"],
     ["cnnx: error: layer model.layers.relu1 (RejectsInput) cannot take input shape (8, 8, 8): scales has 2 "
      "entries; expected one per channel (8)"]),
    ("layer whose _build returns nothing", ["model.layers.relu1.type=build_returns_nothing"],
     ["cnnx: error: layer model.layers.relu1 (BuildReturnsNothing): BuildReturnsNothing._build must return the "
      "per-sample output shape (a tuple of positive ints); it returned None"]),
    ("layer computing in float64 when evaluating", ["model.layers.relu1.type=float64_in_eval"],
     [f"layer 'float64_in_eval' at model.layers.relu1 (from {ORIGIN}): forward(training=False) returned float64 "
      "for float32 input; expected float32"]),
    ("layer with a float64 weight", ["model.layers.relu1.type=float64_parameter"],
     [f"layer 'float64_parameter' at model.layers.relu1 (from {ORIGIN}): parameter 'weight' is float64; "
      "expected float32"]),
    ("loss returning a float64 gradient", ["loss.type=float64_gradient", "~loss.label_smoothing",
                                           "model.layers.fc2.out_features=10"],
     [f"loss 'float64_gradient' (from {ORIGIN}): the gradient is float64 for float32 outputs; expected float32"]),
    ("optimizer whose _update lacks an argument", ["optimizer.type=old_update_signature", "~optimizer.momentum",
                                                  "~optimizer.nesterov", "~optimizer.weight_decay",
                                                  "model.layers.fc2.out_features=10"],
     [f"optimizer 'old_update_signature' (from {ORIGIN}) fails a trial step on a copy of the model's parameters: "
      "TypeError: OldUpdateSignature._update() takes 5 positional arguments but 6 were given"]),
    ("optimizer whose slots is a tuple", ["optimizer.type=slots_as_tuple", "~optimizer.momentum",
                                          "~optimizer.nesterov", "~optimizer.weight_decay",
                                          "model.layers.fc2.out_features=10"],
     [f"optimizer 'slots_as_tuple' (from {ORIGIN}) fails a trial step on a copy of the model's parameters: "
      "TypeError: 'tuple' object is not callable"]),
    ("dataset returning a tuple", ["dataset.type=tuple_data"],
     [f"dataset 'tuple_data' (from {ORIGIN}) returned tuple; expected cnnx.data.splits.DataSplits"]),
    ("dataset whose images do not match its input_shape", ["dataset.type=wrong_image_shape"],
     [f"dataset 'wrong_image_shape' (from {ORIGIN}) declares input_shape (1, 8, 8), but its train split "
      "holds images shaped (1, 6, 6); expected each split's x shaped (N, 1, 8, 8)"]),
]


@pytest.mark.slow
def test_plugin_slips_stop_the_run_in_one_line_naming_the_plugin(installed_plugins, broken_target, tmp_path):
    # In-process tracking: what is under test is the plugin's error, not the tracking helper.
    common = ["+experiment=digits_small", "trainer.epochs=1", "model.layers.fc2.out_features=3",
              "tracking.background=false"]
    runs = []
    for n, (_, overrides, _) in enumerate(SLIPS):
        (tmp_path / str(n)).mkdir()
        runs.append(([*common, *overrides], tmp_path / str(n)))
    results = run_cli_many(runs, env=cli_env(broken_target), timeout=180)
    problems = []
    for (name, _, fragments), (_, workdir), result in zip(SLIPS, runs, results, strict=True):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith("cnnx: error: "):
            problems.append(f"{name}: exit {result.returncode}, stderr ends {result.stderr[-600:]!r}")
            continue
        problems += [f"{name}: {f!r} not in {lines[0]!r}" for f in fragments if f not in lines[0]]
        if any(r.info.status == "RUNNING" for r in all_runs(workdir)):
            problems.append(f"{name}: an MLflow run was left RUNNING")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("name", "fragment"), [
    ("float64_images", "returned train images of dtype float64; expected float32 (N, C, H, W)"),
    ("float_labels", "returned train labels of dtype float64 and shape (12,); expected integer class "
                     "indices shaped (N,)"),
    ("no_channel_axis", "returned input_shape (8, 8); expected (C, H, W) with positive sizes"),
])
def test_a_dataset_breaking_the_contract_is_named_before_training(broken_visible, name, fragment):
    # What a run checks right after loading (the CLI case above shows it reaches the user).
    from cnnx.data.splits import check_loaded
    from cnnx.errors import DataError

    data = registry.datasets.create(name, {}, "dataset")
    with pytest.raises(DataError) as info:
        check_loaded(data, registry.datasets.label(name))
    assert str(info.value).startswith(f"dataset {name!r} (from {ORIGIN}) {fragment}")


@pytest.mark.parametrize(("name", "problem"), [
    ("wrong_image_shape", "declares input_shape (1, 8, 8), but its train split holds images shaped (1, 6, 6); "
                          "expected each split's x shaped (N, 1, 8, 8)"),
    ("fewer_labels", "returned a train split of 12 images and 10 labels; expected one label per image"),
])
def test_a_dataset_whose_splits_disagree_with_themselves_is_named_by_its_entry_point(broken_visible, name, problem):
    # DataSplits refuses them as the loader builds its result; its own name attribute ('broken')
    # is no name the user can find in a config or in `cnnx plugins`.
    from cnnx.errors import DataError

    with pytest.raises(DataError) as info:
        registry.datasets.create(name, {}, "dataset")
    assert str(info.value) == f"dataset {name!r} (from {ORIGIN}) {problem}"


def test_a_layer_whose_get_config_leaves_out_an_option_is_named(broken_visible):
    from cnnx.engine.model import build_model
    from cnnx.plugin_layers import check_plugin_layers

    spec = {"scale": {"type": "forgets_config", "factor": 3.0}, "flat": {"type": "flatten"}}
    expected = (f"layer 'forgets_config' at model.layers.scale (from {ORIGIN}): get_config() returns {{}}, "
                "without factor=3.0 given in the config; expected every constructor argument")
    with pytest.raises(PluginError) as info:
        check_plugin_layers(build_model(spec, (1, 4, 4)), spec)
    assert str(info.value).startswith(expected)
    # The conformance kit says the same.
    with pytest.raises(AssertionError, match="get_config\\(\\) returns \\{\\}, without factor=3.0"):
        check_layer("forgets_config", {"factor": 3.0}, (1, 4, 4))
    # Without the option there is nothing to lose.
    check_plugin_layers(build_model({"scale": {"type": "forgets_config"}}, (1, 4, 4)), {"scale": {"type": "forgets_config"}})


def test_a_layer_inside_a_block_is_named_by_its_config_key(broken_visible):
    from cnnx.engine.model import build_model
    from cnnx.plugin_layers import check_plugin_layers

    spec = {"block1": {"type": "residual", "layers": {"f64": {"type": "float64_output"}}}}
    with pytest.raises(PluginError) as info:
        check_plugin_layers(build_model(spec, (1, 4, 4)), spec)
    assert str(info.value).startswith(
        f"layer 'float64_output' at model.layers.block1.layers.f64 (from {ORIGIN}): forward returned float64")


def test_a_layer_whose_output_disagrees_with_its_shape_or_that_crashes_is_named(broken_visible, monkeypatch):
    from cnnx.engine.model import build_model
    from cnnx.plugin_layers import check_plugin_layers

    spec = {"c": {"type": "conv2d", "out_channels": 3, "kernel_size": 1}, "odd": {"type": "wrong_shape"}}
    model = build_model(spec, (1, 4, 4))
    with pytest.raises(PluginError) as info:
        check_plugin_layers(model, spec)
    assert str(info.value) == (
        f"layer 'wrong_shape' at model.layers.odd (from {ORIGIN}): forward returned shape (2, 1, 4, 4); "
        "expected (2, 3, 4, 4) (build() declared output shape (3, 4, 4) per sample)")

    def crash(self, x, training=True):
        raise IndexError("index 7 is out of bounds\nfor axis 1")

    monkeypatch.setattr(type(model.layers["odd"]), "forward", crash)
    with pytest.raises(PluginError) as info:
        check_plugin_layers(model, spec)
    assert str(info.value) == (
        f"layer 'wrong_shape' at model.layers.odd (from {ORIGIN}) fails on a float32 batch shaped "
        "(2, 3, 4, 4): IndexError: index 7 is out of bounds for axis 1")


def test_a_backward_that_returns_nothing_or_leaves_a_gradient_unset_is_named(broken_visible, monkeypatch):
    import numpy as np

    from cnnx.engine.model import build_model
    from cnnx.plugin_layers import check_plugin_layers

    spec = {"flat": {"type": "flatten"}, "fc": {"type": "wrong_backward", "out_features": 3}}
    layer_type = type(build_model(spec, (1, 2, 2)).layers["fc"])
    monkeypatch.setattr(layer_type, "backward", lambda self, grad_output: None)  # a missing return
    with pytest.raises(PluginError) as info:
        check_plugin_layers(build_model(spec, (1, 2, 2)), spec)
    assert str(info.value) == (f"layer 'wrong_backward' at model.layers.fc (from {ORIGIN}): backward returned "
                               "None; expected a float32 array shaped (2, 4) (a missing return?)")

    monkeypatch.setattr(layer_type, "backward", lambda self, grad_output: np.zeros((2, 4), np.float32))
    with pytest.raises(PluginError) as info:
        check_plugin_layers(build_model(spec, (1, 2, 2)), spec)
    assert str(info.value) == (f"layer 'wrong_backward' at model.layers.fc (from {ORIGIN}): backward left the "
                               "gradient of parameter 'weight' unset; expected it to assign "
                               "self.params['weight'].grad, float32 shaped (3, 4)")
    # The conformance kit says the same (it said "fails shape inference: AttributeError: 'NoneType'
    # object has no attribute 'shape'").
    with pytest.raises(AssertionError) as info:
        check_layer("wrong_backward", {"out_features": 3}, (4,))
    assert str(info.value) == (f"cnnx conformance: layer 'wrong_backward' (from {ORIGIN}) fails shape inference: "
                               "backward left the gradient of parameter 'weight' unset; expected it to assign "
                               "self.params['weight'].grad, float32 shaped (3, 4)")
