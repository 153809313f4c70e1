"""cnnx-contrib's own tests: every component through cnnx's conformance kit (the
``cnnx_conformance`` fixture cnnx installs), plus what each one computes."""

import numpy as np
import pytest

import cnnx
from cnnx import registry
from cnnx.engine.functional.conv import conv2d_forward
from cnnx.errors import ConfigError
from cnnx.testing.agreement import assert_same_step, copy_parameters

LAYER_CASES = {
    "depthwise_conv2d": [({"kernel_size": 3, "padding": 1}, (3, 5, 5)),
                         ({"kernel_size": (2, 3), "stride": 2, "depth_multiplier": 2, "bias": False}, (2, 6, 7)),
                         # Padding at stride 2: the kit's call at another size (8×8, also 4×4 out)
                         # moves the padding within a column buffer of the same shape.
                         ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 7, 7))],
    "separable_conv2d": [({"out_channels": 4, "kernel_size": 3, "padding": 1}, (3, 5, 5)),
                         ({"out_channels": 2, "kernel_size": 2, "stride": 2, "depth_multiplier": 3}, (2, 6, 6))],
}
LOSS_CASES = {"focal_loss": [{}, {"gamma": 0.5}, {"gamma": 0.0}]}
OPTIMIZER_CASES = {"lamb": [{}, {"weight_decay": 0.0, "lr": 0.01}]}


@pytest.mark.parametrize(("name", "case"), [(n, c) for n, cs in LAYER_CASES.items() for c in cs])
def test_layers_conform(cnnx_conformance, name, case):
    cnnx_conformance.layer(name, case[0], case[1], batch_size=3)


@pytest.mark.parametrize(("name", "options"), [(n, c) for n, cs in LOSS_CASES.items() for c in cs])
def test_losses_conform(cnnx_conformance, name, options):
    cnnx_conformance.loss(name, options)


@pytest.mark.parametrize(("name", "options"), [(n, c) for n, cs in OPTIMIZER_CASES.items() for c in cs])
def test_optimizers_conform(cnnx_conformance, name, options):
    cnnx_conformance.optimizer(name, options)


def test_augmented_dataset_conforms(cnnx_conformance):
    cnnx_conformance.dataset("augmented", {"base": {"type": "synthetic", "num_samples": 80, "size": 8},
                                           "copies": 2, "hflip": True})


def test_every_registered_name_is_checked(cnnx_conformance):
    assert cnnx_conformance.registered("layer", "cnnx-contrib") == sorted(LAYER_CASES)
    assert cnnx_conformance.registered("loss", "cnnx-contrib") == sorted(LOSS_CASES)
    assert cnnx_conformance.registered("optimizer", "cnnx-contrib") == sorted(OPTIMIZER_CASES)
    assert cnnx_conformance.registered("dataset", "cnnx-contrib") == ["augmented"]


def test_depthwise_filters_each_channel_alone_in_torch_layout():
    rng = np.random.default_rng(0)
    layer = registry.layers.create("depthwise_conv2d", {"kernel_size": 3, "padding": 1, "depth_multiplier": 2}, "t")
    layer.build((3, 5, 5), rng)
    layer.to(np.float64)
    layer.params["bias"].data[:] = rng.standard_normal(6)
    x = rng.standard_normal((2, 3, 5, 5))
    y = layer.forward(x)
    weight, bias = layer.params["weight"].data, layer.params["bias"].data
    assert weight.shape == (6, 1, 3, 3)  # torch.nn.Conv2d(3, 6, 3, groups=3).weight
    for out in range(6):
        expected, _ = conv2d_forward(x[:, out // 2:out // 2 + 1], weight[out:out + 1], bias[out:out + 1], (1, 1), (1, 1))
        np.testing.assert_allclose(y[:, out:out + 1], expected, rtol=1e-12, atol=1e-12)


def test_separable_is_depthwise_then_pointwise_with_fewer_weights():
    layer = registry.layers.create("separable_conv2d", {"out_channels": 16, "kernel_size": 3}, "t")
    layer.build((8, 6, 6), np.random.default_rng(0))
    shapes = {n: p.data.shape for n, p in layer.named_parameters()}
    assert shapes == {"depthwise.weight": (8, 1, 3, 3), "pointwise.weight": (16, 8, 1, 1), "pointwise.bias": (16,)}
    assert layer.parameter_count() < 16 * 8 * 9 / 3
    x = np.random.default_rng(1).standard_normal((2, 8, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(layer.forward(x), layer.pointwise.forward(layer.depthwise.forward(x)))


@pytest.mark.parametrize("name", ["depthwise_conv2d", "separable_conv2d"])
def test_float64_arrays_handed_to_a_float32_layer_leave_its_gradients_float32(name):
    """As cnnx's own layers with weights: a float64 input or gradient (NumPy's default dtype)
    made the depthwise weights' gradients float64, beside float32 weights."""
    layer = registry.layers.create(name, {"out_channels": 4, "kernel_size": 3} if name == "separable_conv2d"
                                   else {"kernel_size": 3}, "t")
    layer.build((2, 6, 6), np.random.default_rng(0))
    y = layer.forward(np.random.default_rng(1).standard_normal((2, 2, 6, 6)))
    grad_x = layer.backward(np.ones(y.shape))
    assert y.dtype == grad_x.dtype == np.float32
    assert {n: p.grad.dtype for n, p in layer.named_parameters()} == {n: np.float32 for n, _ in layer.named_parameters()}


@pytest.mark.parametrize("name", ["depthwise_conv2d", "separable_conv2d"])
def test_a_gradient_not_shaped_as_the_output_is_refused_naming_the_layer(name):
    """Depthwise broadcast a (N, 1, H, W) gradient into a wrong input gradient; separable's
    error named its inner 1x1 Conv2D, which the user never wrote."""
    import re

    from cnnx.errors import ShapeError

    layer = registry.layers.create(name, {"out_channels": 4, "kernel_size": 3} if name == "separable_conv2d"
                                   else {"kernel_size": 3}, "t")
    y = layer(np.ones((2, 2, 6, 6), np.float32))
    wrong = (y.shape[0], 1, *y.shape[2:])
    with pytest.raises(ShapeError, match=re.escape(f"{layer!r}: backward got a gradient of shape {wrong}; the last "
                                                   f"forward returned {y.shape}")):
        layer.backward(np.ones(wrong, np.float32))


def test_a_softmax_before_focal_loss_is_warned_about():
    """Focal loss takes logits, as cross_entropy does: a softmax before it trained to 0.10."""
    from cnnx.engine.functional.softmax import softmax
    from cnnx.engine.losses.base import ProbabilitiesAsLogitsWarning

    logits = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    with pytest.warns(ProbabilitiesAsLogitsWarning, match="^focal_loss: the model's outputs look like probabilities"):
        registry.losses.create("focal_loss", {}, "loss")(softmax(logits, axis=1), np.arange(6) % 4)


@pytest.mark.parametrize("name", ["depthwise_conv2d", "separable_conv2d"])
def test_an_unbatched_image_on_a_first_call_is_refused_naming_the_batch_axis(name):
    import re

    from cnnx.errors import ShapeError

    layer = registry.layers.create(name, {"out_channels": 4, "kernel_size": 3} if name == "separable_conv2d"
                                   else {"kernel_size": 3}, "t")
    with pytest.raises(ShapeError, match=re.escape("cannot be built for input (3, 7, 7), whose first axis is the "
                                                   "batch (pass one sample as x[None]")):
        layer(np.ones((3, 7, 7), np.float32))


@pytest.mark.parametrize("layer", ["depthwise_conv2d", "separable_conv2d"])
def test_an_in_place_relu_after_the_convolution_overwrites_it_and_keeps_the_gradients(layer):
    conv = {"type": layer, "kernel_size": 3, "padding": 1}
    if layer == "separable_conv2d":
        conv["out_channels"] = 4

    def run(inplace):
        spec = {"conv": conv, "relu": {"type": "relu", "inplace": inplace},
                "flatten": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 3}}
        model = cnnx.build_model(spec, (2, 5, 5), seed=0).to(np.float64)
        y = model.forward(np.random.default_rng(0).standard_normal((3, 2, 5, 5)))
        model.backward(np.ones_like(y))
        return model, y, {n: p.grad.copy() for n, p in model.named_parameters()}

    (model, y, grads), (_, y_ref, grads_ref) = run(True), run(False)
    assert model.layers["relu"].overwrites_input
    np.testing.assert_array_equal(y, y_ref)
    for name, grad in grads_ref.items():
        np.testing.assert_array_equal(grads[name], grad, err_msg=name)


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_smaller_for_gamma_two():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((8, 5)), rng.integers(0, 5, 8)
    ce_value, ce_grad = registry.losses.create("cross_entropy", {}, "t")(logits, labels)
    value, grad = registry.losses.create("focal_loss", {"gamma": 0.0}, "t")(logits, labels)
    assert value == pytest.approx(ce_value, rel=1e-12)
    np.testing.assert_allclose(grad, ce_grad, rtol=1e-10, atol=1e-15)
    p = np.exp(logits - logits.max(1, keepdims=True))
    pt = (p / p.sum(1, keepdims=True))[np.arange(8), labels]
    focal, _ = registry.losses.create("focal_loss", {"gamma": 2.0}, "t")(logits, labels)
    assert focal == pytest.approx(np.mean(-(1 - pt) ** 2 * np.log(pt)), rel=1e-12)
    # Confident, correct predictions give finite values and gradients.
    sure = np.array([[60.0, 0.0, -60.0]])
    value, grad = registry.losses.create("focal_loss", {"gamma": 0.5}, "t")(sure, np.array([0]))
    assert np.isfinite(value) and np.isfinite(grad).all()


def test_lamb_step_matches_the_paper():
    from cnnx.engine.parameter import Parameter

    p = Parameter(np.array([3.0, -4.0], dtype=np.float32))
    p.grad = np.array([0.5, 0.25], dtype=np.float32)
    opt = registry.optimizers.create("lamb", {"lr": 0.1, "weight_decay": 0.1}, "t", named_parameters=[("w", p)])
    opt.step()
    w, g = np.array([3.0, -4.0]), np.array([0.5, 0.25])
    m, v = 0.1 * g / 0.1, 0.001 * g * g / 0.001
    u = m / (np.sqrt(v) + 1e-6) + 0.1 * w
    np.testing.assert_allclose(p.data, w - 0.1 * np.linalg.norm(w) / np.linalg.norm(u) * u, rtol=1e-5)


def test_augmented_adds_copies_to_train_only():
    base = {"type": "synthetic", "num_samples": 80, "size": 8}
    plain = registry.datasets.create("synthetic", {k: v for k, v in base.items() if k != "type"}, "t")
    data = registry.datasets.create("augmented", {"base": base, "copies": 2, "vflip": True}, "t")
    assert len(data.train[0]) == 3 * len(plain.train[0])
    np.testing.assert_array_equal(data.train[0][:len(plain.train[0])], plain.train[0])
    np.testing.assert_array_equal(data.train[1], np.tile(plain.train[1], 3))
    np.testing.assert_array_equal(data.test[0], plain.test[0])
    assert not np.array_equal(data.train[0][len(plain.train[0]):2 * len(plain.train[0])], plain.train[0])
    with pytest.raises(ConfigError, match="dataset augmented: copies=0"):
        registry.datasets.create("augmented", {"base": base, "copies": 0}, "t")


@pytest.mark.parametrize("options", [{"kernel_size": 3, "padding": 1}, {"kernel_size": 3, "stride": 2, "padding": 1}])
def test_depthwise_takes_any_spatial_size_as_torch_does(options):
    """It returned an output of its built size, partly made of the last input's columns."""
    rng = np.random.default_rng(0)
    layer = registry.layers.create("depthwise_conv2d", options, "t")
    reference = registry.layers.create("depthwise_conv2d", options, "t")
    layer.build((2, 8, 8), rng)
    reference.build((2, 7, 7), rng)
    copy_parameters(layer, reference)
    layer(rng.standard_normal((4, 2, 8, 8)).astype(np.float32))
    assert_same_step(layer, reference, rng.standard_normal((4, 2, 7, 7)).astype(np.float32))


def test_depthwise_refuses_another_channel_count_in_one_line():
    from cnnx.errors import ShapeError

    layer = registry.layers.create("depthwise_conv2d", {"kernel_size": 3}, "t")
    layer.build((2, 8, 8), np.random.default_rng(0))
    with pytest.raises(ShapeError, match=r"^DepthwiseConv2D\(.*expected \(N, 2, H, W\)"):
        layer(np.ones((4, 3, 8, 8), np.float32))
