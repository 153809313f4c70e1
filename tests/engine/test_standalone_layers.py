"""Layers used on their own, outside a Model: built by their first call, as in Keras and
PyTorch's Lazy* modules; conv and pooling take any spatial size, as PyTorch's do."""

import re

import numpy as np
import pytest

from cnnx.engine.layers.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from cnnx.engine.layers.batchnorm import BatchNorm2D
from cnnx.engine.layers.conv import Conv2D
from cnnx.engine.layers.dense import Dense
from cnnx.engine.layers.dropout import Dropout
from cnnx.engine.layers.flatten import Flatten
from cnnx.engine.layers.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from cnnx.errors import DataError, ShapeError
from cnnx.testing.agreement import assert_same_step, copy_parameters

X = np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32)


@pytest.mark.parametrize("make, x, out_shape", [
    (lambda: Dense(4), X.reshape(2, -1), (2, 4)),
    (lambda: Conv2D(4, 3), X, (2, 4, 5, 5)),
    (lambda: BatchNorm2D(), X, (2, 3, 7, 7)),
    (lambda: MaxPool2D(2), X, (2, 3, 3, 3)),
    (lambda: Dropout(0.5), X, (2, 3, 7, 7)),
])
def test_a_layers_first_call_builds_it_for_that_input(make, x, out_shape):
    layer = make()
    y = layer(x)
    assert y.shape == out_shape and layer.input_shape == x.shape[1:] and layer.output_shape == out_shape[1:]
    assert layer.backward(np.ones_like(y)).shape == x.shape


def test_a_layer_built_by_its_first_call_gets_the_same_weights_whatever_was_built_before():
    """They came from one generator per process, so they depended on every layer built first."""
    alone = Dense(4)
    alone(X.reshape(2, -1))
    Conv2D(4, 3)(X), Dense(4)(X.reshape(2, -1)), BatchNorm2D()(X)
    after_others = Dense(4)
    after_others(X.reshape(2, -1))
    np.testing.assert_array_equal(alone.params["weight"].data, after_others.params["weight"].data)
    np.testing.assert_array_equal(alone.params["bias"].data, after_others.params["bias"].data)


def test_building_a_layer_with_a_generator_chooses_its_weights():
    chosen = Dense(4)
    chosen.build((X[0].size,), np.random.default_rng(7))
    default = Dense(4)
    default(X.reshape(2, -1))
    assert not np.array_equal(chosen.params["weight"].data, default.params["weight"].data)


@pytest.mark.parametrize("layer, x", [(Dense(4), X.reshape(2, -1)), (Conv2D(4, 3), X), (BatchNorm2D(), X)])
def test_forward_on_an_unbuilt_layer_says_to_build_it(layer, x):
    with pytest.raises(RuntimeError, match=rf"^{type(layer).__name__}\(.*is not built: call it as layer\(x\)"):
        layer.forward(x)


def twins(make, built_for, fed_shape):
    """A layer built for ``built_for`` and one built for the input it is fed, same weights."""
    rng = np.random.default_rng(1)
    layer, reference = make(), make()
    layer.build(built_for, rng)
    reference.build(fed_shape, rng)
    copy_parameters(layer, reference)
    return layer, reference


@pytest.mark.parametrize("make, built_for", [
    (lambda: Conv2D(4, 3), (3, 5, 5)),
    (lambda: Conv2D(4, 3, stride=2, padding=1), (3, 9, 9)),
    (lambda: MaxPool2D(2), (3, 4, 4)),
    (lambda: MaxPool2D(3, 2, 1), (5, 4, 4)),  # channels are free too: pooling has no weights
    (lambda: AvgPool2D(3, 2, 1), (3, 4, 4)),
    (lambda: GlobalAvgPool2D(), (3, 4, 4)),
    (lambda: BatchNorm2D(), (3, 4, 4)),
])
def test_conv_pool_and_batchnorm_take_any_spatial_size_as_torch_does(make, built_for):
    layer, reference = twins(make, built_for, X.shape[1:])
    y, expected = layer(X), reference(X)
    np.testing.assert_array_equal(y, expected)
    g = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(g), reference.backward(g))
    for name, param in layer.params.items():
        np.testing.assert_array_equal(param.grad, reference.params[name].grad, err_msg=name)


@pytest.mark.parametrize("layer, built_for, x, expected", [
    (Conv2D(4, 3), (3, 5, 5), np.ones((2, 2, 7, 7), np.float32), "expected (N, 3, H, W)"),
    (Conv2D(4, 3), (3, 5, 5), np.ones((2, 3, 2, 2), np.float32), "kernel (3, 3) with padding (0, 0) is larger"),
    (Conv2D(4, 3), (3, 5, 5), np.ones((3, 5, 5), np.float32), "expected (N, 3, H, W)"),
    (MaxPool2D(3), (3, 4, 4), np.ones((2, 3, 2, 7), np.float32), "kernel (3, 3) with padding (0, 0) is larger"),
    (BatchNorm2D(), (3, 4, 4), np.ones((2, 4, 4, 4), np.float32), "expected (N, 3, H, W)"),
    (Dense(4), (5,), np.ones((2, 6), np.float32), "expected (N, 5)"),
    (Dense(4), (5,), np.ones((2, 5, 1), np.float32), "add a flatten layer before it"),
])
def test_an_input_a_layer_cannot_take_is_refused_in_one_line_with_both_shapes(layer, built_for, x, expected):
    layer.build(built_for, np.random.default_rng(0))
    with pytest.raises(ShapeError) as error:
        layer(x)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{type(layer).__name__}(")
    assert f"built for input {(None, *built_for)} and got {x.shape}" in message
    assert expected in message


@pytest.mark.parametrize("make, x", [
    (lambda: Dense(4), np.ones((2, 5))),
    (lambda: Conv2D(4, 3), X.astype(np.float64)),
    (lambda: MaxPool2D(2), (X * 100).astype(np.uint8)),
])
def test_a_layer_called_on_other_real_dtypes_works_in_float32(make, x):
    layer = make()
    assert layer(x).dtype == np.float32
    assert layer(x).dtype == np.float32  # built by then: the cast is not only the first call's


def test_a_layer_called_on_complex_numbers_refuses_them_in_one_line():
    with pytest.raises(DataError, match=r"^Dense\(out_features=4.*input has dtype complex128; expected real"):
        Dense(4)(np.ones((2, 5), complex))


def test_max_pooling_backward_after_a_forward_under_no_grad_asks_for_one_with_gradients():
    """It said "backward called before forward" after a forward it had just run."""
    from cnnx.engine.grad_mode import no_grad

    layer = MaxPool2D(2)
    with no_grad():
        y = layer(X)
    with pytest.raises(RuntimeError, match=r"^MaxPool2D\(.*\): backward needs a forward with gradients first "
                                           r"\(a forward under no_grad keeps no route"):
        layer.backward(np.ones_like(y))


def _residual():
    from cnnx.engine.layers.residual import Residual

    return Residual({"conv": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}})


@pytest.mark.parametrize("make, x", [
    (lambda: Dense(4), X.reshape(2, -1)),
    (lambda: Conv2D(4, 3, padding=1), X),
    (lambda: BatchNorm2D(), X),
    (_residual, X),
], ids=["dense", "conv2d", "batchnorm2d", "residual"])
def test_a_float32_layer_handed_float64_arrays_keeps_its_gradients_float32(make, x):
    """forward and backward called directly with a float64 input or gradient (a loss written in
    float64, say) made every parameter gradient, the output and the input gradient float64; they
    are computed in the layer's float32, as layer(x), Model and PyTorch's autograd do."""
    layer = make()
    y = layer(x)
    g = np.random.default_rng(3).standard_normal(y.shape)  # float64
    grad_x = layer.backward(g.astype(np.float32))
    expected = {name: p.grad for name, p in layer.named_parameters()}

    y64 = layer.forward(x.astype(np.float64))
    grad_x64 = layer.backward(g)

    assert y64.dtype == grad_x64.dtype == np.float32
    np.testing.assert_array_equal(y64, y)
    np.testing.assert_array_equal(grad_x64, grad_x)
    for name, param in layer.named_parameters():
        assert param.grad.dtype == np.float32, name
        np.testing.assert_array_equal(param.grad, expected[name], err_msg=name)


@pytest.mark.parametrize("make, built_for", [
    (lambda: Conv2D(4, 3), X.shape[1:]),
    (lambda: Dense(4), (X[0].size,)),
    (lambda: BatchNorm2D(), X.shape[1:]),
    (lambda: AvgPool2D(2), X.shape[1:]),
    (lambda: GlobalAvgPool2D(), X.shape[1:]),
    (lambda: Flatten(), X.shape[1:]),
    (lambda: ReLU(), X.shape[1:]),
    (lambda: LeakyReLU(-0.2), X.shape[1:]),
    (lambda: Sigmoid(), X.shape[1:]),
    (lambda: Tanh(), X.shape[1:]),
    (lambda: Softmax(), X.shape[1:]),
    (_residual, X.shape[1:]),
])
def test_backward_before_any_forward_says_so_in_one_line(make, built_for):
    """It failed inside NumPy: "'NoneType' object is not subscriptable", "matmul: Input operand
    1 does not have enough dimensions", naming neither the layer nor the cause."""
    layer = make()
    layer.build(built_for, np.random.default_rng(0))
    with pytest.raises(RuntimeError, match=rf"^{type(layer).__name__}\(.*\): backward called before forward; "
                                           r"run layer\(x\) or layer\.forward\(x\) first$"):
        layer.backward(np.ones((2, *layer.output_shape), np.float32))


@pytest.mark.parametrize("make, sample, hint, detail", [
    (lambda: Conv2D(4, 3), X[0], r"pass one sample as x\[None\], or a batch of one-channel \(N, H, W\) "
                                 r"images as x\[:, None\]", r"Conv2D needs a per-sample input of shape \(C, H, W\), "
                                                            r"got \(7, 7\)"),
    (lambda: Dense(4), X[0, 0, 0], r"pass one sample as x\[None\]",
     r"dense expects a flat per-sample input \(features,\), got shape \(\)$"),
])
def test_an_unbatched_sample_on_a_first_call_is_refused_naming_the_batch_axis(make, sample, hint, detail):
    """PyTorch's Conv2d and Linear take an unbatched sample. Here the message spoke only of the
    sample without its first axis — a (3, 7, 7) image was "got (7, 7)" — and told a dense layer
    handed a vector to add a flatten layer."""
    layer = make()
    with pytest.raises(ShapeError, match=rf"^{type(layer).__name__}\(.*\) cannot be built for input "
                                         rf"{re.escape(str(sample.shape))}, whose first axis is the batch "
                                         rf"\({hint}\): {detail}"):
        layer(sample)
    assert layer(sample[None]).shape[0] == 1


@pytest.mark.parametrize("make, batch, message", [
    (lambda: Dense(4), np.ones((8, 3, 5, 5), np.float32),
     r"^Dense\(.*\) cannot be built for input \(8, 3, 5, 5\): dense expects a flat per-sample input "
     r"\(features,\), got shape \(3, 5, 5\); add a 'flatten' layer before it$"),
    (lambda: Conv2D(4, 3), np.ones((2, 8, 3, 7, 7), np.float32),
     r"^Conv2D\(.*\) cannot be built for input \(2, 8, 3, 7, 7\): Conv2D needs a per-sample input of shape "
     r"\(C, H, W\), got \(8, 3, 7, 7\)"),
    (lambda: Conv2D(4, 3), np.ones((7, 7), np.float32),
     r"^Conv2D\(.*\) cannot be built for input \(7, 7\): Conv2D needs a per-sample input of shape \(C, H, W\), "
     r"got \(7,\)"),
])
def test_a_batch_of_the_wrong_rank_is_not_taken_for_one_sample(make, batch, message):
    """The batch-axis hint is for inputs with exactly a sample's axes: for a batch of images
    handed to a dense layer, x[None] would have been wrong advice. The input as passed is
    named either way (the build error alone speaks of its shape without the first axis)."""
    with pytest.raises(ShapeError, match=message):
        make()(batch)


@pytest.mark.parametrize("make, first, second", [
    # Same column buffer shape (C·k², OH·OW·N), other positions in the padding.
    (lambda: Conv2D(4, 3, padding=1), (2, 3, 8, 8), (8, 3, 4, 4)),
    # Same OH, OW and N: a 7×7 and an 8×8 input both give 4×4 at stride 2.
    (lambda: Conv2D(4, 3, stride=2, padding=1), (2, 3, 8, 8), (2, 3, 7, 7)),
    (lambda: MaxPool2D(3, 2, 1), (2, 3, 8, 8), (2, 3, 7, 7)),
])
def test_a_layer_fed_another_geometry_computes_it_afresh(make, first, second):
    """Its column buffer was reused by shape alone: the second input read the first one's
    values where zeros of the padding belong."""
    rng = np.random.default_rng(3)
    x1, x2 = (rng.standard_normal(shape).astype(np.float32) for shape in (first, second))
    layer, reference = twins(make, first[1:], second[1:])
    for x in (x1, x2):
        y = layer(x)
        layer.backward(np.ones_like(y))
    assert_same_step(layer, reference, x2)


@pytest.mark.parametrize("make, x", [
    (lambda: Dense(4), X.reshape(2, -1)),
    (lambda: Conv2D(4, 3, padding=1), X),
    (lambda: MaxPool2D(2), X),
    (lambda: MaxPool2D(3, 2, 1), X),
    (lambda: BatchNorm2D(), X),
    (lambda: ReLU(), X),
    (_residual, X),
], ids=["dense", "conv2d", "maxpool2x2", "maxpool3s2p1", "batchnorm2d", "relu", "residual"])
def test_a_call_under_no_grad_between_forward_and_backward_leaves_the_gradients(make, x):
    """As torch.no_grad() leaves the earlier graph: conv's gradients came from the inference
    batch, and max pooling refused its backward."""
    from cnnx.engine.grad_mode import no_grad

    other = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    results = []
    for evaluate_between in (False, True):
        layer = make()
        y = layer(x)
        if evaluate_between:
            with no_grad():
                layer(other, training=False)
        g = np.random.default_rng(6).standard_normal(y.shape).astype(np.float32)
        results.append({"input": layer.backward(g), **{n: p.grad for n, p in layer.named_parameters()}})
    for name, expected in results[0].items():
        np.testing.assert_array_equal(results[1][name], expected, err_msg=name)
