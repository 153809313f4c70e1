"""Inference (predict, no_grad) between a forward and its backward leaves the gradients alone."""

import numpy as np
import pytest

import cnnx
from cnnx.engine.grad_mode import is_grad_enabled, no_grad
from cnnx.engine.layers import pooling
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.module import Module
from cnnx.errors import ConfigError

SPEC = {
    "conv1": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
    "bn": {"type": "batchnorm2d"},
    "relu1": {"type": "relu", "inplace": True},
    "pool1": {"type": "maxpool2d", "kernel_size": 2},
    "conv2": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
    "pool2": {"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1},
    "sig": {"type": "sigmoid"},
    "drop": {"type": "dropout", "p": 0.3},
    "flatten": {"type": "flatten"},
    "fc": {"type": "dense", "out_features": 3},
}


class Cached(Module):
    """A plugin-style layer that knows nothing of no_grad: it caches its input on every forward."""

    def forward(self, x, training=True):
        self._x = x
        return x * x

    def backward(self, grad_output):
        return 2 * self._x * grad_output


def batches():
    rng = np.random.default_rng(0)
    # Same batch size for both, so inference would reuse the training batch's buffers.
    return (rng.standard_normal((6, 2, 8, 8)).astype(np.float32),
            rng.standard_normal((6, 2, 8, 8)).astype(np.float32), np.arange(6) % 3)


def gradients(model, x, y, between=lambda model: None):
    value, grad = CrossEntropyLoss()(model.forward(x, training=True), y)
    between(model)
    grad_x = model.backward(grad)
    return grad_x, {name: p.grad.copy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("inference", [
    lambda model, x: model.predict(x),
    lambda model, x: model.predict(x, batch_size=4),
    lambda model, x: model.predict(x[:5]),
])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_backward_after_predict_uses_the_training_forward(inference, mode):
    x_train, x_val, y = batches()
    expected_x, expected = gradients(cnnx.build_model(SPEC, (2, 8, 8), seed=3), x_train, y)
    model = cnnx.build_model(SPEC, (2, 8, 8), seed=3)
    getattr(model, mode)()
    got_x, got = gradients(model, x_train, y, lambda m: inference(m, x_val))
    np.testing.assert_array_equal(got_x, expected_x)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_no_grad_forward_leaves_a_plugin_layers_cache_alone():
    x_train, x_val, _ = batches()
    model = cnnx.Model({"sq": Cached(), "flat": cnnx.engine.layers.flatten.Flatten()}, (2, 8, 8))
    out = model.forward(x_train)
    with no_grad():
        np.testing.assert_array_equal(model.forward(x_val), (x_val * x_val).reshape(6, -1))
    assert is_grad_enabled()
    np.testing.assert_array_equal(model.backward(np.ones_like(out)), 2 * x_train)


def test_backward_after_only_inference_is_a_clear_error():
    x_train, _, _ = batches()
    model = cnnx.build_model(SPEC, (2, 8, 8))
    model.predict(x_train)
    with pytest.raises(RuntimeError, match=r"^Model.backward called before a forward pass with gradients.*no_grad"):
        model.backward(np.ones((6, 3), np.float32))


def test_predict_skips_the_max_pooling_gradient_route(monkeypatch):
    kept = []
    real = pooling.max_pool2d_forward

    def spy(*args, keep_winners=True):
        kept.append(keep_winners)
        return real(*args, keep_winners=keep_winners)

    monkeypatch.setattr(pooling, "max_pool2d_forward", spy)
    x_train, _, _ = batches()
    model = cnnx.build_model(SPEC, (2, 8, 8)).eval()
    model.predict(x_train)
    assert kept == [False, False]
    model(x_train)  # an eval-mode forward with gradients keeps it, for saliency maps
    assert kept[2:] == [True, True]


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_predict_refuses_a_batch_size_that_is_not_a_positive_integer(batch_size):
    model = cnnx.build_model(SPEC, (2, 8, 8))
    expected = rf"^Model.predict: batch_size={batch_size!r} is (out of range|not an integer); accepted: int >= 1$"
    with pytest.raises(ConfigError, match=expected):
        model.predict(np.zeros((2, 2, 8, 8), np.float32), batch_size=batch_size)


def test_no_grad_restores_the_flag_after_an_error():
    with pytest.raises(KeyError), no_grad():
        raise KeyError
    assert is_grad_enabled()
