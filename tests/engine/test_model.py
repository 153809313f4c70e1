import re
from collections import OrderedDict

import numpy as np
import pytest

import cnnx
from cnnx.bench import WORKLOADS
from cnnx.errors import CheckpointError, ConfigError, DataError, PluginError, ShapeError

LENET5 = WORKLOADS["lenet5"][1]  # LeNet-5 as the issue specifies it

# What torch.nn.Sequential(OrderedDict(conv1=Conv2d(1, 6, 5, padding=2), ...)) reports.
TORCH_LENET5_SHAPES = {
    "conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,),
    "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
    "fc1.weight": (120, 400), "fc1.bias": (120,),
    "fc2.weight": (84, 120), "fc2.bias": (84,),
    "fc3.weight": (10, 84), "fc3.bias": (10,),
}


def torch_lenet5(nn):
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 6, 5, padding=2), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 16, 5), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2), flatten=nn.Flatten(),
        fc1=nn.Linear(400, 120), relu3=nn.ReLU(), fc2=nn.Linear(120, 84), relu4=nn.ReLU(),
        fc3=nn.Linear(84, 10),
    ))


def test_lenet5_parameters_match_torch_names_and_shapes():
    model = cnnx.build_model(LENET5, (1, 28, 28))
    shapes = {name: p.data.shape for name, p in model.named_parameters()}
    assert shapes == TORCH_LENET5_SHAPES
    assert list(shapes) == list(TORCH_LENET5_SHAPES)
    assert model.output_shape == (10,)


def test_lenet5_matches_a_real_torch_sequential_when_torch_is_installed():
    torch = pytest.importorskip("torch")
    reference = torch_lenet5(torch.nn)
    model = cnnx.build_model(LENET5, (1, 28, 28))
    assert {k: tuple(v.shape) for k, v in reference.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    # Same weights ⇒ same outputs: the layouts really are PyTorch's.
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    expected = reference(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(model.forward(x, training=False), expected, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trips_exactly_including_batchnorm_buffers():
    spec = {
        "conv": {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
        "bn": {"type": "batchnorm2d"},
        "relu": {"type": "relu"},
        "flat": {"type": "flatten"},
        "fc": {"type": "dense", "out_features": 3},
    }
    source = cnnx.build_model(spec, (2, 6, 6), seed=1)
    x = np.random.default_rng(0).standard_normal((8, 2, 6, 6)).astype(np.float32)
    source.forward(x, training=True)  # moves the running statistics off their defaults
    state = source.state_dict()
    assert {"bn.running_mean", "bn.running_var", "bn.weight", "bn.bias"} <= set(state)
    target = cnnx.build_model(spec, (2, 6, 6), seed=2)
    target.load_state_dict(state)
    for key, value in target.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
        assert value.dtype == np.float32
    np.testing.assert_array_equal(source.forward(x, training=False), target.forward(x, training=False))


def test_state_dict_lists_each_layers_parameters_then_its_buffers_as_pytorch_does():
    spec = {"conv": {"type": "conv2d", "out_channels": 2, "kernel_size": 3}, "bn": {"type": "batchnorm2d"},
            "flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 3}}
    assert list(cnnx.build_model(spec, (1, 5, 5)).state_dict()) == [
        "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
        "fc.weight", "fc.bias"]


def test_load_state_dict_returns_the_keys_it_did_not_match():
    model = cnnx.build_model(LENET5, (1, 28, 28))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc3.")}
    missing, unexpected = model.load_state_dict({**state, "head.weight": np.zeros(3)}, strict=False)
    assert (missing, unexpected) == (["fc3.weight", "fc3.bias"], ["head.weight"])
    result = model.load_state_dict(model.state_dict())
    assert (result.missing_keys, result.unexpected_keys) == ([], [])


def test_load_state_dict_is_strict_naming_the_key():
    model = cnnx.build_model(LENET5, (1, 28, 28))
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "fc3.bias"}
    with pytest.raises(CheckpointError, match="missing keys: fc3.bias"):
        model.load_state_dict(missing)
    with pytest.raises(CheckpointError, match="unexpected keys: fc4.weight"):
        model.load_state_dict({**state, "fc4.weight": np.zeros(3)})
    with pytest.raises(CheckpointError, match=r"'fc1.weight' has shape \(120, 399\)"):
        model.load_state_dict({**state, "fc1.weight": np.zeros((120, 399), np.float32)})


def test_load_state_dict_refuses_a_same_size_entry_of_another_shape():
    # A (1, n) bias has the right number of elements and NumPy would copy it into (n,)
    # without complaint, so only a shape (not size) check names the bad entry.
    model = cnnx.build_model({"flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 4}}, (1, 2, 3))
    state = model.state_dict()
    before = {k: v.copy() for k, v in state.items()}
    bad = {**state, "fc.bias": np.arange(4, dtype=np.float32).reshape(1, 4)}
    with pytest.raises(CheckpointError, match=r"'fc\.bias' has shape \(1, 4\), the model expects \(4,\)"):
        model.load_state_dict(bad)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_updates_parameters_in_place():
    model = cnnx.build_model(LENET5, (1, 28, 28))
    array = dict(model.named_parameters())["conv1.weight"].data
    model.load_state_dict({k: np.zeros_like(v) for k, v in model.state_dict().items()})
    assert dict(model.named_parameters())["conv1.weight"].data is array
    assert not array.any()


def test_same_seed_same_weights_different_seed_different_weights():
    a, b, c = (cnnx.build_model(LENET5, (1, 28, 28), seed=s) for s in (3, 3, 4))
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key])
    assert not np.array_equal(a.state_dict()["conv1.weight"], c.state_dict()["conv1.weight"])


def test_shape_errors_name_the_layer_and_both_shapes():
    bad = dict(LENET5)
    bad["conv2"] = {"type": "conv2d", "out_channels": 16, "kernel_size": 20}
    with pytest.raises(ShapeError, match=r"model\.layers\.conv2 .*\(6, 14, 14\)"):
        cnnx.build_model(bad, (1, 28, 28))
    no_flatten = {k: v for k, v in LENET5.items() if k != "flatten"}
    with pytest.raises(ShapeError, match=r"model\.layers\.fc1.*flatten"):
        cnnx.build_model(no_flatten, (1, 28, 28))
    model = cnnx.build_model(LENET5, (1, 28, 28))
    with pytest.raises(ShapeError, match=r"\(None, 1, 28, 28\).*\(2, 1, 32, 32\)"):
        model.forward(np.zeros((2, 1, 32, 32), np.float32))


def test_spec_errors_name_the_key():
    with pytest.raises(PluginError, match=r"unknown layer type 'conv3d' at model\.layers\.c"):
        cnnx.build_model({"c": {"type": "conv3d"}}, (1, 8, 8))
    with pytest.raises(ConfigError, match=r"model\.layers\.c must be a mapping with a 'type'"):
        cnnx.build_model({"c": {"out_channels": 3}}, (1, 8, 8))
    with pytest.raises(ConfigError, match=r"unknown option model\.layers\.c\.filters"):
        cnnx.build_model({"c": {"type": "conv2d", "filters": 3, "kernel_size": 3}}, (1, 8, 8))


def test_summary_lists_layers_output_shapes_and_parameter_counts():
    model = cnnx.build_model(LENET5, (1, 28, 28))
    summary = model.summary()
    assert "conv1 (Conv2D)" in summary and "(None, 6, 28, 28)" in summary and "156" in summary
    assert "fc1 (Dense)" in summary and "48,120" in summary
    assert f"Total params: {model.parameter_count():,}" in summary
    assert model.parameter_count() == 61706


def test_summary_counts_batchnorm_statistics_as_non_trainable_as_keras_does():
    # Keras: BatchNormalization over 6 channels shows 24 params (gamma, beta, moving mean and
    # variance); the totals are "Total / Trainable / Non-trainable params".
    spec = {"conv": {"type": "conv2d", "out_channels": 6, "kernel_size": 3},
            "bn": {"type": "batchnorm2d"},
            "res": {"type": "residual", "layers": {"bn2": {"type": "batchnorm2d"}}},
            "flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 2}}
    lines = cnnx.build_model(spec, (1, 5, 5)).summary().splitlines()
    rows = {line.split()[0]: line for line in lines}
    assert rows["bn"].endswith(" 24") and rows["res"].endswith(" 24") and rows["bn2"].endswith(" 24")
    assert rows["conv"].endswith(" 60") and rows["fc"].endswith(" 110")
    assert len({len(line) for line in lines[1:-3]}) == 1  # the table keeps its columns
    assert lines[-3:] == ["Total params: 218 (0.9 KB)",
                          "Trainable params: 194 (0.8 KB)",
                          "Non-trainable params: 24 (0.1 KB)"]


def test_train_and_eval_modes_reach_every_layer():
    spec = {"res": {"type": "residual", "layers": {
        "conv": {"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1},
        "drop": {"type": "dropout", "p": 0.5}}}}
    model = cnnx.build_model(spec, (2, 4, 4))
    model.eval()
    assert not any(layer.training for _, layer in model.named_layers())
    x = np.ones((3, 2, 4, 4), np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x))  # dropout is off in eval
    model.train()
    assert all(layer.training for _, layer in model.named_layers())


@pytest.mark.parametrize("first", ["conv2d", "dense"])
def test_backward_without_input_grad_gives_the_same_parameter_grads(first):
    spec = ({"c": {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1}}
            if first == "conv2d" else {})
    spec.update({"flatten": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 4}})
    model = cnnx.build_model(spec, (2, 7, 7), seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 7, 7), dtype=np.float32)
    grad_y = rng.standard_normal((5, 4), dtype=np.float32)

    model.forward(x, training=True)
    grad_x = model.backward(grad_y)
    full = {name: p.grad.copy() for name, p in model.named_parameters()}
    assert grad_x.shape == x.shape

    model.forward(x, training=True)
    skipped = model.backward(grad_y, input_grad=False)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, full[name])
    if first == "conv2d":
        assert skipped is None
    # the flag is per call: the input gradient is back when asked for
    model.forward(x, training=True)
    np.testing.assert_array_equal(model.backward(grad_y), grad_x)


def test_backward_without_input_grad_tells_the_layer_that_runs_first():
    """A ReLU declared before a max pooling runs after it (``run_order``): the flag went to the
    ReLU, and the pooling, which feeds nothing, still computed the input gradient for nobody."""
    spec = {"relu": {"type": "relu"}, "pool": {"type": "maxpool2d", "kernel_size": 2},
            "conv": {"type": "conv2d", "out_channels": 2, "kernel_size": 3}, "flatten": {"type": "flatten"}}
    model = cnnx.build_model(spec, (1, 8, 8))
    told = {}
    for name in ("pool", "relu"):
        layer = model.layers[name]
        def backward(grad, layer=layer, name=name, original=layer.backward):
            told[name] = layer.needs_input_grad
            return original(grad)
        layer.backward = backward
    y = model.forward(np.ones((2, 1, 8, 8), np.float32))
    model.backward(np.ones_like(y), input_grad=False)
    assert told == {"pool": False, "relu": True}
    # For that backward only: the layer may run elsewhere with layers before it.
    assert model.layers["pool"].needs_input_grad is True


def test_parameters_live_in_one_buffer_through_loading_and_casting():
    from cnnx.engine.flat_parameters import shared_buffer

    spec = {"conv": {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
            "bn": {"type": "batchnorm2d"},
            "block": {"type": "residual", "layers": {"c": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}}},
            "flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 3}}
    model = cnnx.build_model(spec, (2, 6, 6), seed=0)
    params = [p for _, p in model.named_parameters()]
    flat = shared_buffer(params)
    assert flat is not None and flat.size == model.parameter_count() and flat.dtype == np.float32
    same_seed = cnnx.build_model(spec, (2, 6, 6), seed=0).state_dict()
    assert all(np.array_equal(v, same_seed[k]) for k, v in model.state_dict().items())  # values kept
    model.load_state_dict(cnnx.build_model(spec, (2, 6, 6), seed=1).state_dict())
    assert shared_buffer(params) is flat  # loaded in place
    model.to(np.float64)
    cast = shared_buffer([p for _, p in model.named_parameters()])
    assert cast is not None and cast.dtype == np.float64


@pytest.mark.parametrize("pool", [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},  # overlapping windows, -inf padding
    {"kernel_size": [2, 3], "stride": 1},
])
@pytest.mark.parametrize("inplace", [False, True])
def test_relu_then_max_pool_runs_swapped_with_identical_outputs_and_gradients(pool, inplace):
    spec = {"conv": {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1},
            "relu": {"type": "relu", "inplace": inplace}, "pool": {"type": "maxpool2d", **pool},
            "flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 4}}
    model = cnnx.build_model(spec, (2, 7, 7), seed=3)
    assert [type(layer).__name__ for layer in model._run_order][1:3] == ["MaxPool2D", "ReLU"]
    rng = np.random.default_rng(0)
    # Rounded inputs and zeroed weights make ties and all-negative windows common.
    x = np.round(rng.standard_normal((5, 2, 7, 7)), 0).astype(np.float32)
    model.load_state_dict({k: np.where(np.abs(v) < 0.1, 0, np.round(v, 1)) for k, v in model.state_dict().items()})
    g = rng.standard_normal((5, 4)).astype(np.float32)

    out = model.forward(x, training=True)
    grad_x = model.backward(g)
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}

    # the declared order, layer by layer
    h = x
    for layer in model.layers.values():
        h = layer.forward(h, training=True)
    back = g
    for layer in reversed(list(model.layers.values())):
        back = layer.backward(back)
    np.testing.assert_array_equal(out, h)
    np.testing.assert_array_equal(grad_x, back)
    for name, param in model.named_parameters():
        np.testing.assert_array_equal(grads[name], param.grad, err_msg=name)


def test_calling_a_model_or_layer_follows_its_train_eval_mode_like_torch():
    # PyTorch users write model.eval(); model(x): that must not drop units nor move batchnorm's
    # running statistics.
    spec = {"bn": {"type": "batchnorm2d"}, "flat": {"type": "flatten"}, "drop": {"type": "dropout", "p": 0.5}}
    model = cnnx.build_model(spec, (2, 3, 3))
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32) + 5
    model.eval()
    before = model.state_dict()
    np.testing.assert_array_equal(model(x), model.predict(x))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    dropout = model.layers["drop"]
    flat = x.reshape(4, -1)
    np.testing.assert_array_equal(dropout(flat), flat)
    model.train()
    assert (model(x) == 0).any()
    assert not np.array_equal(model.state_dict()["bn.running_mean"], before["bn.running_mean"])
    np.testing.assert_array_equal(model(x, training=False), model.predict(x))  # explicit wins


def test_inputs_are_cast_to_float32_or_refused_in_one_line_naming_the_dtype():
    model = cnnx.build_model(LENET5, (1, 28, 28))
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    expected = model.predict(x.astype(np.float32))
    for cast in (x, x.tolist()):  # float64 arrays and nested lists, as Keras accepts them
        out = model.forward(cast, training=False)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected)
    for bad in (x.astype(complex), x.astype(str), x.astype(object)):
        with pytest.raises(DataError, match=rf"model input .*dtype {bad.dtype}.*float32"):
            model.forward(bad)


def test_backward_keeps_float32_and_names_a_misfit_gradient():
    model = cnnx.build_model(LENET5, (1, 28, 28))
    with pytest.raises(RuntimeError, match="backward.*before.*forward"):
        model.backward(np.zeros((2, 10), np.float32))
    model.forward(np.zeros((2, 1, 28, 28), np.float32), training=True)
    for shape in ((2, 9), (3, 10), (20,)):
        with pytest.raises(ShapeError, match=rf"grad_output .*\(2, 10\).*got {re.escape(str(shape))}"):
            model.backward(np.zeros(shape, np.float32))
    # A loss computed in float64 (targets as float64) must not turn every gradient float64.
    grad_x = model.backward(np.ones((2, 10)))
    assert grad_x.dtype == np.float32
    assert {p.grad.dtype for _, p in model.named_parameters()} == {np.dtype(np.float32)}


def test_backward_casts_a_float64_gradient_even_where_no_layer_on_its_path_would():
    """Dense, Conv2D, BatchNorm2D and Residual cast a gradient to their own dtype, which hid
    from the LeNet-5 test above that the model's own cast was gone; a path of layers without
    parameters (or a plugin layer that does not cast) handed back float64."""
    model = cnnx.build_model({"relu": {"type": "relu"}, "pool": {"type": "maxpool2d", "kernel_size": 2},
                              "flat": {"type": "flatten"}}, (1, 4, 4))
    model.forward(np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32), training=True)
    grad_x = model.backward(np.ones((2, 4)))  # float64, as a loss with float64 targets returns it
    assert grad_x.dtype == np.float32


def test_a_torch_state_dict_with_batchnorm_loads_as_is():
    # torch.nn.BatchNorm2d's state_dict carries num_batches_tracked, which cnnx does not keep.
    spec = {"conv": {"type": "conv2d", "out_channels": 4, "kernel_size": 3}, "bn": {"type": "batchnorm2d"}}
    model = cnnx.build_model(spec, (1, 6, 6))
    torch_state = {**model.state_dict(), "bn.num_batches_tracked": np.array(7)}
    torch_state["bn.running_var"] = np.full(4, 2.0, np.float32)
    model.load_state_dict(torch_state)
    np.testing.assert_array_equal(model.state_dict()["bn.running_var"], torch_state["bn.running_var"])
    assert "bn.num_batches_tracked" not in model.state_dict()
    with pytest.raises(CheckpointError, match=r"unexpected keys: conv\.num_batches_tracked"):
        model.load_state_dict({**torch_state, "conv.num_batches_tracked": np.array(7)})


def test_load_state_dict_changes_nothing_unless_every_entry_fits():
    model = cnnx.build_model(LENET5, (1, 28, 28))
    before = model.state_dict()
    zeros = {k: np.zeros_like(v) for k, v in before.items()}
    for key, bad, message in [
        ("fc3.bias", np.zeros(11, np.float32), r"'fc3.bias' has shape \(11,\)"),
        ("fc3.bias", np.array(["x"] * 10), r"'fc3.bias' has dtype <U1; expected real numbers"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            model.load_state_dict({**zeros, key: bad})
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(value, before[name])
    with pytest.raises(CheckpointError, match="state_dict must be a mapping of name → array, got list"):
        model.load_state_dict(list(before.items()))


def test_a_model_from_layer_objects_needs_no_generator_and_input_shape_errors_are_one_line():
    from cnnx.engine.layers.dense import Dense
    from cnnx.engine.layers.flatten import Flatten

    a = cnnx.Model({"flat": Flatten(), "fc": Dense(3)}, (1, 4, 4))
    b = cnnx.build_model({"flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 3}}, (1, 4, 4))
    np.testing.assert_array_equal(a.state_dict()["fc.weight"], b.state_dict()["fc.weight"])  # seed 0 both
    for bad in (8, "1x8x8", (1, 8, "x")):
        with pytest.raises(ShapeError, match=r"input_shape must be \(C, H, W\) with positive sizes, got "):
            cnnx.build_model({"flat": {"type": "flatten"}}, bad)


def test_a_channels_last_or_channel_less_input_is_refused_with_the_fix():
    model = cnnx.build_model(LENET5, (1, 28, 28))
    with pytest.raises(ShapeError, match=r"got \(2, 28, 28, 1\): channels last.*x\.transpose\(0, 3, 1, 2\)"):
        model.forward(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ShapeError, match=r"got \(2, 28, 28\): .*channel axis.*x\[:, None\]"):
        model.forward(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ShapeError, match=r"got \(2, 1, 32, 32\)$"):
        model.forward(np.zeros((2, 1, 32, 32), np.float32))


def test_get_config_rebuilds_the_same_model_keras_style():
    spec = {"res": {"type": "residual", "layers": {
        "conv": {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}}},
        "bn": {"type": "batchnorm2d", "momentum": 0.2}, "flat": {"type": "flatten"},
        "fc": {"type": "dense", "out_features": 4, "init": "he_normal"}}
    model = cnnx.build_model(spec, (2, 5, 5), seed=4)
    rebuilt = cnnx.build_model(model.get_config(), model.input_shape, seed=4)
    assert rebuilt.get_config() == model.get_config()
    assert rebuilt.get_config()["layers"]["bn"] == {"type": "batchnorm2d", "eps": 1e-5, "momentum": 0.2}
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(rebuilt.state_dict()[key], value)


def test_an_eval_mode_model_gives_input_gradients_as_torch_does():
    # Saliency maps: model.eval(); out = model(x); model.backward(ones) — PyTorch allows it.
    torch = pytest.importorskip("torch")
    reference = torch_lenet5(torch.nn).eval()
    model = cnnx.build_model(LENET5, (1, 28, 28)).eval()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    reference(xt).sum().backward()
    out = model(x)
    np.testing.assert_allclose(model.backward(np.ones_like(out)), xt.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_load_state_dict_takes_torch_parameters_as_state_dict_keep_vars_gives_them():
    """Parameters (requires_grad) failed inside torch: "Can't call numpy() on Tensor that
    requires grad", naming no key."""
    torch = pytest.importorskip("torch")
    reference = torch_lenet5(torch.nn)
    model = cnnx.build_model(LENET5, (1, 28, 28))
    model.load_state_dict(reference.state_dict(keep_vars=True))
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key], value.numpy(), err_msg=key)


def test_one_layer_object_at_two_places_is_refused_naming_both():
    """Its second call replaced what the first kept for backward: gradients were silently wrong
    (relative error 1.0 against finite differences for a shared ReLU, or a shared Conv2D)."""
    from cnnx.engine.layers.activations import ReLU
    from cnnx.engine.layers.conv import Conv2D
    from cnnx.engine.layers.dense import Dense
    from cnnx.engine.layers.flatten import Flatten

    relu = ReLU()
    layers = {"c1": Conv2D(4, 3, padding=1), "r1": relu, "c2": Conv2D(4, 3, padding=1), "r2": relu,
              "f": Flatten(), "fc": Dense(3)}
    with pytest.raises(ConfigError, match=r"^model\.layers\.r2 is the same ReLU object as model\.layers\.r1: .* give "
                                          r"each place its own instance$"):
        cnnx.Model(layers, (1, 8, 8))
    conv = Conv2D(4, 3, padding=1)  # weight sharing
    with pytest.raises(ConfigError, match=r"^model\.layers\.c2 is the same Conv2D object as model\.layers\.c1"):
        cnnx.Model({"c1": conv, "c2": conv, "f": Flatten(), "fc": Dense(3)}, (4, 8, 8))


def test_an_unknown_option_in_a_python_spec_is_not_answered_with_command_line_syntax():
    """``~key`` drops a preset's option on Hydra's command line; a dict built in Python has no
    preset, and the hint read as if it had."""
    with pytest.raises(ConfigError) as caught:
        cnnx.build_model({"c": {"type": "conv2d", "out_chanels": 2, "kernel_size": 3}}, (1, 8, 8))
    assert str(caught.value) == ("unknown option model.layers.c.out_chanels for layer 'conv2d'; accepted: "
                                 "out_channels, kernel_size, stride, padding, bias, init")


def test_predict_runs_small_batches_by_default_so_evaluation_memory_stays_bounded():
    """At its former 512 a batch of CIFAR-sized images held gigabytes of im2col columns per layer
    (3.3 GB for three 64-channel layers, against 373 MB at 64), for no gain in speed."""
    model = cnnx.build_model({"conv": {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
                              "flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 2}},
                             (1, 6, 6), seed=0)
    x = np.random.default_rng(0).standard_normal((300, 1, 6, 6)).astype(np.float32)
    outputs = model.predict(x)
    np.testing.assert_allclose(outputs, model.predict(x, batch_size=300), atol=1e-6)
    columns = [a for kept in model.layers["conv"].workspace._arrays.values() for a in kept.values() if a.ndim == 2]
    assert columns and max(a.shape[1] for a in columns) == 4 * 4 * 300  # the explicit 300...
    assert sorted({a.shape[1] // 16 for a in columns}) == [44, 64, 300]  # ... and the default's 64 + remainder
