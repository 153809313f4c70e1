import numpy as np
import pytest

from cnnx.engine.layers.batchnorm import BatchNorm2D
from cnnx.errors import ConfigError, ShapeError
from cnnx.testing.gradcheck import check_float32, check_gradients


class _RandomisedBN(BatchNorm2D):
    """BatchNorm whose affine parameters and running statistics start away from 1 and 0,
    so that every term of the gradient is exercised."""

    def _build(self, input_shape, rng):
        shape = super()._build(input_shape, rng)
        c = input_shape[0]
        self.params["weight"].data[:] = rng.uniform(0.5, 2.0, c)
        self.params["bias"].data[:] = rng.standard_normal(c)
        self.buffers["running_mean"][:] = rng.standard_normal(c)
        self.buffers["running_var"][:] = rng.uniform(0.5, 2.0, c)
        return shape


def _random_config(seed):
    rng = np.random.default_rng(seed)
    while True:
        c, h, w = (int(d) for d in rng.integers(1, 5, size=3))
        batch = int(rng.integers(1, 5))
        if batch * h * w >= 2:
            return (c, h, w), batch, float(rng.uniform(0.05, 0.5)), float(10 ** rng.uniform(-5, -2))


def _x(rng, shape):
    # Offset and scaled per channel, as real activations are.
    return 3 * rng.standard_normal(shape) + rng.standard_normal((1, shape[1], 1, 1)) * 2


@pytest.mark.parametrize("seed", range(30))
def test_gradients_training(seed):
    shape, batch, momentum, eps = _random_config(seed)
    check_gradients(_RandomisedBN(eps=eps, momentum=momentum), shape, batch_size=batch,
                    seed=seed, make_input=_x, training=True)


@pytest.mark.parametrize("seed", range(30))
def test_gradients_eval(seed):
    shape, batch, momentum, eps = _random_config(seed)
    check_gradients(_RandomisedBN(eps=eps, momentum=momentum), shape, batch_size=batch,
                    seed=seed, make_input=_x, training=False)


@pytest.mark.parametrize("training", [True, False])
def test_float32(training):
    check_float32(_RandomisedBN(), (3, 4, 5), batch_size=2, training=training)


def _plain_reference(x, weight, bias, mean, var, eps):
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        out[:, c] = (x[:, c] - mean[c]) / np.sqrt(var[c] + eps) * weight[c] + bias[c]
    return out


def test_training_forward_and_running_statistics_follow_pytorch_formulas():
    rng = np.random.default_rng(0)
    layer = _RandomisedBN(eps=1e-3, momentum=0.2)
    layer.build((3, 4, 5), rng)
    layer.to(np.float64)
    w, b = layer.params["weight"].data, layer.params["bias"].data
    running_mean = layer.buffers["running_mean"].copy()
    running_var = layer.buffers["running_var"].copy()
    for _ in range(3):
        x = _x(rng, (2, 3, 4, 5))
        y = layer.forward(x, training=True)
        per_channel = [x[:, c].ravel() for c in range(3)]
        mean = np.array([v.mean() for v in per_channel])
        biased = np.array([v.var() for v in per_channel])
        unbiased = np.array([v.var(ddof=1) for v in per_channel])
        np.testing.assert_allclose(y, _plain_reference(x, w, b, mean, biased, 1e-3), rtol=1e-12)
        running_mean = 0.8 * running_mean + 0.2 * mean
        running_var = 0.8 * running_var + 0.2 * unbiased
        np.testing.assert_allclose(layer.buffers["running_mean"], running_mean, rtol=1e-12)
        np.testing.assert_allclose(layer.buffers["running_var"], running_var, rtol=1e-12)


def test_eval_uses_running_statistics_and_leaves_them_alone():
    rng = np.random.default_rng(1)
    layer = _RandomisedBN()
    layer.build((2, 3, 3), rng)
    for _ in range(2):
        layer.forward(_x(rng, (4, 2, 3, 3)).astype(np.float32), training=True)
    stats = {k: v.copy() for k, v in layer.buffers.items()}
    x = _x(rng, (4, 2, 3, 3)).astype(np.float32)
    y = layer.forward(x, training=False)
    expected = _plain_reference(x, layer.params["weight"].data, layer.params["bias"].data,
                                stats["running_mean"], stats["running_var"], 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    for k, v in layer.buffers.items():
        np.testing.assert_array_equal(v, stats[k])


def test_eval_adds_eps_to_the_running_variance_so_a_dead_channel_stays_finite():
    """Without eps, evaluation differed from PyTorch by about eps/(2·var), too little to see at
    eps=1e-5 with the variances above, and a channel whose running variance fell to 0 gave inf."""
    rng = np.random.default_rng(2)
    layer = _RandomisedBN(eps=0.5)
    layer.build((2, 3, 3), rng)
    layer.to(np.float64)
    layer.buffers["running_var"][:] = [0.0, 0.25]  # the first channel never varied
    x = _x(rng, (3, 2, 3, 3))
    y = layer.forward(x, training=False)
    assert np.isfinite(y).all()
    expected = _plain_reference(x, layer.params["weight"].data, layer.params["bias"].data,
                                layer.buffers["running_mean"], layer.buffers["running_var"], 0.5)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


def test_training_output_is_standardised_per_channel():
    layer = BatchNorm2D()
    layer.build((3, 5, 5), np.random.default_rng(0))
    y = layer.forward(_x(np.random.default_rng(1), (8, 3, 5, 5)).astype(np.float32))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, rtol=1e-3)


def test_momentum_extremes():
    x = _x(np.random.default_rng(0), (4, 2, 3, 3))
    frozen, copying = BatchNorm2D(momentum=0.0), BatchNorm2D(momentum=1.0)
    for layer in (frozen, copying):
        layer.build((2, 3, 3), np.random.default_rng(0))
        layer.to(np.float64)
        layer.forward(x)
    np.testing.assert_array_equal(frozen.buffers["running_mean"], 0)
    np.testing.assert_array_equal(frozen.buffers["running_var"], 1)
    np.testing.assert_allclose(copying.buffers["running_mean"], x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(copying.buffers["running_var"], x.var(axis=(0, 2, 3), ddof=1))


def test_state_names_shapes_and_dtypes():
    layer = BatchNorm2D()
    layer.build((6, 4, 4), np.random.default_rng(0))
    assert {n: p.shape for n, p in layer.named_parameters()} == {"weight": (6,), "bias": (6,)}
    assert {n: b.shape for n, b in layer.named_buffers()} == {"running_mean": (6,),
                                                               "running_var": (6,)}
    assert all(b.dtype == np.float32 for _, b in layer.named_buffers())
    layer.to(np.float64)
    assert all(b.dtype == np.float64 for _, b in layer.named_buffers())
    assert layer.get_config() == {"eps": 1e-5, "momentum": 0.1}


def test_single_value_per_channel_is_rejected_in_training_only():
    layer = BatchNorm2D()
    layer.build((3, 1, 1), np.random.default_rng(0))
    x = np.ones((1, 3, 1, 1), dtype=np.float32)
    with pytest.raises(ShapeError, match=r"\(1, 3, 1, 1\)"):
        layer.forward(x, training=True)
    assert layer.forward(x, training=False).shape == x.shape


def test_flat_input_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"\(C, H, W\).*\(10,\)"):
        BatchNorm2D().build((10,), np.random.default_rng(0))


@pytest.mark.parametrize("kwargs", [{"eps": 0}, {"eps": -1e-5}, {"eps": "small"},
                                    {"momentum": 1.5}, {"momentum": -0.1}, {"momentum": None}])
def test_config_errors(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        BatchNorm2D(**kwargs)


def test_matches_torch_batchnorm2d():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = _RandomisedBN(momentum=0.3)
    ours.build((3, 4, 5), rng)
    theirs = torch.nn.BatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        for name in ("weight", "bias"):
            getattr(theirs, name).copy_(torch.from_numpy(ours.params[name].data))
        for name in ("running_mean", "running_var"):
            getattr(theirs, name).copy_(torch.from_numpy(ours.buffers[name]))
    for training in (True, True, False):
        theirs.train(training)
        x = _x(rng, (2, 3, 4, 5)).astype(np.float32)
        g = rng.standard_normal(x.shape).astype(np.float32)
        xt = torch.from_numpy(x).requires_grad_()
        theirs.zero_grad()
        yt = theirs(xt)
        yt.backward(torch.from_numpy(g))
        np.testing.assert_allclose(ours.forward(x, training=training), yt.detach().numpy(),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
        for name in ("weight", "bias"):
            np.testing.assert_allclose(ours.params[name].grad, getattr(theirs, name).grad.numpy(),
                                       rtol=1e-4, atol=1e-4)
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(ours.buffers[name], getattr(theirs, name).numpy(),
                                       rtol=1e-5, atol=1e-6)
