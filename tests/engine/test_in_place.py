"""``inplace=True`` never changes a model's numbers: a layer overwrites its input only where
nothing else reads it (``cnnx.engine.in_place``), and still does wherever that is safe."""

import numpy as np
import pytest

import cnnx

PRODUCERS = {
    "conv": {"type": "conv2d", "out_channels": 3, "kernel_size": 1},
    "tanh": {"type": "tanh"},
    "sigmoid": {"type": "sigmoid"},
    "softmax": {"type": "softmax"},
    "relu": {"type": "relu"},
    "leaky": {"type": "leaky_relu", "negative_slope": 0.1},
    "leaky_negative": {"type": "leaky_relu", "negative_slope": -0.5},
    "maxpool": {"type": "maxpool2d", "kernel_size": 1},
}
CONSUMERS = {
    "relu": {"type": "relu"},
    "leaky": {"type": "leaky_relu", "negative_slope": 0.2},
    "leaky_negative": {"type": "leaky_relu", "negative_slope": -0.5},
    "dropout": {"type": "dropout", "p": 0.3},
}


def spec_with(producer, consumer, inplace, flatten_between):
    consumer = {**CONSUMERS[consumer], "inplace": inplace}
    layers = {"conv": {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1},
              "producer": PRODUCERS[producer]}
    if flatten_between:
        layers["flatten"] = {"type": "flatten"}
    layers["consumer"] = consumer
    layers["second"] = {**CONSUMERS["relu"], "inplace": inplace}
    if not flatten_between:
        layers["flatten"] = {"type": "flatten"}
    layers["fc"] = {"type": "dense", "out_features": 4}
    return layers


def run(spec, x, training=True):
    """Output, input gradient and parameter gradients of one float64 forward and backward."""
    model = cnnx.build_model(spec, x.shape[1:], seed=0).to(np.float64)
    y = model.forward(x, training=training)
    grad_x = model.backward(np.linspace(-1, 1, y.size).reshape(y.shape))
    return model, y, grad_x, {name: p.grad.copy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("flatten_between", [False, True])
@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
@pytest.mark.parametrize("producer", sorted(PRODUCERS))
def test_in_place_layers_give_the_numbers_of_out_of_place_ones(producer, consumer, flatten_between):
    x = np.random.default_rng(1).standard_normal((5, 2, 4, 4))
    _, y_ref, gx_ref, grads_ref = run(spec_with(producer, consumer, False, flatten_between), x.copy())
    x_in = x.copy()
    _, y, gx, grads = run(spec_with(producer, consumer, True, flatten_between), x_in)
    np.testing.assert_array_equal(x_in, x)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gx, gx_ref, rtol=0, atol=1e-12)
    for name, grad in grads_ref.items():
        np.testing.assert_allclose(grads[name], grad, rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(("producer", "consumer", "overwrites"), [
    ("conv", "relu", True), ("maxpool", "leaky_negative", True), ("relu", "dropout", True),
    ("leaky", "relu", True), ("leaky_negative", "leaky_negative", True),
    ("relu", "leaky_negative", False), ("tanh", "dropout", False), ("sigmoid", "relu", False),
    ("softmax", "leaky", False),
])
def test_layers_still_overwrite_where_nothing_reads_their_input(producer, consumer, overwrites):
    model, *_ = run(spec_with(producer, consumer, True, False), np.ones((2, 2, 4, 4)))
    assert model.layers["consumer"].overwrites_input is overwrites
    assert model.layers["consumer"].get_config()["inplace"] is True, "the config keeps what was asked"


def test_a_residual_blocks_input_stays_intact_for_its_shortcut():
    def spec(inplace):
        body = {"relu": {"type": "relu", "inplace": inplace},
                "conv": {"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1},
                "act": {"type": "relu", "inplace": inplace}}
        return {"res": {"type": "residual", "layers": body}, "flatten": {"type": "flatten"},
                "fc": {"type": "dense", "out_features": 3}}

    x = np.random.default_rng(2).standard_normal((3, 2, 4, 4))
    _, y_ref, gx_ref, grads_ref = run(spec(False), x.copy())
    x_in = x.copy()
    model, y, gx, grads = run(spec(True), x_in)
    np.testing.assert_array_equal(x_in, x)
    np.testing.assert_allclose(y, y_ref, atol=1e-12)
    np.testing.assert_allclose(gx, gx_ref, atol=1e-12)
    for name, grad in grads_ref.items():
        np.testing.assert_allclose(grads[name], grad, atol=1e-12, err_msg=name)
    body = model.layers["res"].body.layers
    assert (body["relu"].overwrites_input, body["act"].overwrites_input) == (False, True)


@pytest.mark.parametrize("training", [True, False])
def test_the_callers_batch_is_never_overwritten(training):
    # Evaluation hands the model views of the stored data; a leaky ReLU applied to them in
    # place would compound from one epoch to the next.
    spec = {"first": {"type": "leaky_relu", "negative_slope": 0.5, "inplace": True},
            "drop": {"type": "dropout", "inplace": True},
            "relu": {"type": "relu", "inplace": True},
            "flatten": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 2}}
    data = np.random.default_rng(3).standard_normal((4, 1, 3, 3))
    kept = data.copy()
    model = cnnx.build_model(spec, data.shape[1:], seed=0).to(np.float64)
    model.forward(data[:2], training=training)
    np.testing.assert_array_equal(data, kept)


def test_a_layer_on_its_own_honours_inplace():
    from cnnx.engine.layers.activations import ReLU

    layer = ReLU(inplace=True)
    layer.build((3,), np.random.default_rng(0))
    x = np.array([[-1.0, 2.0, -3.0]])
    assert layer.forward(x) is x and x.tolist() == [[0.0, 2.0, 0.0]]
