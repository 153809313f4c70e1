import numpy as np
import pytest

import cnnx
from cnnx.engine.layers.residual import Residual
from cnnx.errors import ConfigError, ShapeError
from cnnx.testing.gradcheck import check_float32, check_gradients


def random_block(rng):
    """A residual body of 1–2 convs (maybe strided, maybe changing channels) and a batchnorm."""
    channels = int(rng.integers(1, 4))
    out_channels = int(rng.choice([channels, channels + 1]))
    stride = int(rng.integers(1, 3))
    kernel = (int(rng.choice([1, 3])), int(rng.choice([1, 3])))
    layers = {"conv1": {"type": "conv2d", "out_channels": out_channels, "kernel_size": kernel,
                        "stride": stride, "padding": (kernel[0] // 2, kernel[1] // 2)}}
    if rng.random() < 0.5:
        layers["bn"] = {"type": "batchnorm2d"}
    layers["act"] = {"type": "tanh"}
    layers["conv2"] = {"type": "conv2d", "out_channels": out_channels, "kernel_size": 3, "padding": 1}
    size = (int(rng.integers(3, 8)), int(rng.integers(3, 8)))
    shortcut = "auto" if (stride > 1 or out_channels != channels) else str(rng.choice(["auto", "projection"]))
    activation = "relu" if rng.random() < 0.5 else None
    return layers, (channels, *size), shortcut, activation


@pytest.mark.parametrize("case", range(32))
def test_residual_gradients_match_finite_differences(case):
    rng = np.random.default_rng(1000 + case)
    layers, input_shape, shortcut, activation = random_block(rng)
    block = Residual(layers, shortcut=shortcut, activation=activation)
    check_gradients(block, input_shape, batch_size=int(rng.integers(1, 4)), seed=case)
    # A same-shape "projection" case would otherwise check an identity block's gradients twice.
    assert (block.shortcut is not None) == (shortcut == "projection" or block.output_shape != input_shape)


def test_residual_keeps_float32():
    layers = {"conv": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1}}
    check_float32(Residual(layers), (2, 7, 7))


def test_identity_and_projection_shortcuts_and_parameter_names():
    spec = {
        "same": {"type": "residual", "layers": {
            "conv1": {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}}},
        "down": {"type": "residual", "layers": {
            "conv1": {"type": "conv2d", "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1}}},
    }
    model = cnnx.build_model(spec, (3, 8, 8))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["same.conv1.weight", "same.conv1.bias", "down.conv1.weight", "down.conv1.bias",
                     "down.shortcut.weight"]
    assert dict(model.named_parameters())["down.shortcut.weight"].shape == (6, 3, 1, 1)
    assert model.output_shape == (6, 4, 4)


def test_identity_shortcut_output_is_body_plus_input():
    layers = {"conv": {"type": "conv2d", "out_channels": 2, "kernel_size": 1, "bias": False}}
    block = Residual(layers, activation=None)
    block.build((2, 3, 3), np.random.default_rng(0))
    block.body.layers["conv"].params["weight"].data[...] = 0
    x = np.random.default_rng(1).standard_normal((2, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(block.forward(x), x)


def test_projection_shortcut_is_built_and_used_even_when_the_body_keeps_the_shape():
    layers = {"conv": {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}}
    spec = {"block": {"type": "residual", "shortcut": "projection", "activation": None, "layers": layers}}
    model = cnnx.build_model(spec, (3, 5, 5), seed=0)
    params = dict(model.named_parameters())
    assert params["block.shortcut.weight"].shape == (3, 3, 1, 1)

    block = model.layers["block"]
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 5)).astype(np.float32)
    body = block.body.forward(x, training=False)
    weight = params["block.shortcut.weight"].data[:, :, 0, 0]
    # The 1×1 projection is a per-pixel channel mix, so the block must add W·x, not x.
    expected = body + np.einsum("oc,nchw->nohw", weight, x)
    out = block.forward(x, training=False)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, body + x, atol=1e-3)


def test_residual_errors_name_the_key():
    with pytest.raises(ConfigError, match="shortcut must be one of"):
        Residual({"c": {"type": "relu"}}, shortcut="sideways")
    spec = {"b": {"type": "residual", "shortcut": "identity", "layers": {
        "conv": {"type": "conv2d", "out_channels": 5, "kernel_size": 3, "padding": 1}}}}
    with pytest.raises(ShapeError, match="identity shortcut cannot add"):
        cnnx.build_model(spec, (3, 8, 8))
    nested_bad = {"b": {"type": "residual", "layers": {"c": {"type": "conv9d"}}}}
    with pytest.raises(Exception, match=r"model\.layers\.b\.layers\.c"):
        cnnx.build_model(nested_bad, (3, 8, 8))
