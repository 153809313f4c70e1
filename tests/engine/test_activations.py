import warnings

import numpy as np
import pytest

from cnnx.engine.layers.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from cnnx.errors import ConfigError
from cnnx.testing.gradcheck import check_float32, check_gradients

SEEDS = range(30)


def _random_shape(seed):
    rng = np.random.default_rng(1000 + seed)
    ndim = int(rng.integers(1, 4))
    return tuple(int(d) for d in rng.integers(1, 6, size=ndim)), int(rng.integers(1, 6))


def _away_from_kink(rng, shape):
    # Finite differences across the kink at 0 are meaningless; keep |x| >= 0.05.
    x = rng.standard_normal(shape)
    return np.sign(x) * (0.05 + np.abs(x))


def _slope(seed):
    # Ordinary slopes, zero, negative and > 1 (all allowed by PyTorch).
    return [0.01, 0.2, 0.0, -0.5, 1.0, 3.0][seed % 6] if seed < 12 else float(
        np.random.default_rng(seed).uniform(-2, 3)
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_relu_gradients(seed):
    shape, batch = _random_shape(seed)
    check_gradients(ReLU(), shape, batch_size=batch, seed=seed, make_input=_away_from_kink)


@pytest.mark.parametrize("seed", SEEDS)
def test_leaky_relu_gradients(seed):
    shape, batch = _random_shape(seed)
    check_gradients(LeakyReLU(_slope(seed)), shape, batch_size=batch, seed=seed,
                    make_input=_away_from_kink)


@pytest.mark.parametrize("seed", SEEDS)
def test_sigmoid_gradients(seed):
    shape, batch = _random_shape(seed)
    check_gradients(Sigmoid(), shape, batch_size=batch, seed=seed,
                    make_input=lambda rng, s: 3 * rng.standard_normal(s))


@pytest.mark.parametrize("seed", SEEDS)
def test_tanh_gradients(seed):
    shape, batch = _random_shape(seed)
    check_gradients(Tanh(), shape, batch_size=batch, seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_gradients(seed):
    shape, batch = _random_shape(seed)
    ndim = len(shape) + 1
    dim = int(np.random.default_rng(seed).choice([d for d in range(-ndim + 1, ndim) if d]))
    check_gradients(Softmax(dim), shape, batch_size=batch, seed=seed,
                    make_input=lambda rng, s: 2 * rng.standard_normal(s))


LAYERS = [ReLU, lambda: LeakyReLU(0.1), lambda: LeakyReLU(-0.3), Sigmoid, Tanh, Softmax,
          lambda: Softmax(1)]


@pytest.mark.parametrize("make", LAYERS)
def test_float32_and_input_untouched(make):
    check_float32(make(), (3, 4), batch_size=2)
    layer = make()
    layer.build((3, 4), np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    before = x.copy()
    y = layer.forward(x)
    layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(x, before)
    assert y.shape == x.shape


def test_forward_values_match_plain_formulas():
    x = np.random.default_rng(0).standard_normal((4, 5)) * 3
    np.testing.assert_array_equal(ReLU().forward(x), np.where(x > 0, x, 0))
    np.testing.assert_allclose(LeakyReLU(0.2).forward(x), np.where(x > 0, x, 0.2 * x))
    np.testing.assert_allclose(LeakyReLU(-0.5).forward(x), np.where(x > 0, x, -0.5 * x))
    np.testing.assert_allclose(LeakyReLU(3.0).forward(x), np.where(x > 0, x, 3.0 * x))
    np.testing.assert_allclose(Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    np.testing.assert_allclose(Tanh().forward(x), (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1))
    e = np.exp(x)
    np.testing.assert_allclose(Softmax().forward(x), e / e.sum(axis=1, keepdims=True))


def test_default_leaky_slope_is_pytorchs():
    assert LeakyReLU().negative_slope == 0.01
    np.testing.assert_allclose(LeakyReLU().forward(np.array([[-2.0, 2.0]])), [[-0.02, 2.0]])


def test_softmax_dim_picks_the_axis():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    for dim, axis in [(1, 1), (-1, 3), (2, 2), (-3, 1)]:
        layer = Softmax(dim)
        layer.build((3, 4, 5), np.random.default_rng(0))
        np.testing.assert_allclose(layer.forward(x).sum(axis=axis), 1.0)


def test_softmax_without_dim_normalises_channels_as_torch_does():
    """``torch.nn.Softmax()`` with no dim takes dim 1 of 2-D and of 4-D inputs."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    layer = Softmax()
    layer.build((3, 4, 5), np.random.default_rng(0))
    y = layer.forward(x)
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    assert not np.allclose(y.sum(axis=3), 1.0)
    e = np.exp(x)
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("dim", [0, -4, 4, 7])
def test_softmax_rejects_the_batch_axis_and_missing_axes(dim):
    with pytest.raises(ConfigError, match=f"dim={dim}"):
        Softmax(dim).build((3, 4, 5), np.random.default_rng(0))


def test_extreme_inputs_give_finite_values_and_gradients():
    x = np.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for layer in (ReLU(), LeakyReLU(), Sigmoid(), Tanh(), Softmax()):
            layer.build((5,), np.random.default_rng(0))
            y = layer.forward(x)
            g = layer.backward(np.ones_like(y))
            assert np.all(np.isfinite(y)) and np.all(np.isfinite(g)), type(layer).__name__
            assert y.dtype == g.dtype == np.float32


@pytest.mark.parametrize("make", [ReLU, lambda **kw: LeakyReLU(0.1, **kw),
                                  lambda **kw: LeakyReLU(-0.4, **kw),
                                  lambda **kw: LeakyReLU(2.5, **kw)])
def test_inplace_overwrites_the_input_and_keeps_gradients_exact(make):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    g = rng.standard_normal((3, 7)).astype(np.float32)
    reference = make()
    y_ref = reference.forward(x)
    dx_ref = reference.backward(g)
    inplace = make(inplace=True)
    buf = x.copy()
    y = inplace.forward(buf)
    assert y is buf
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(inplace.backward(g), dx_ref)


def test_leaky_slope_given_as_numpy_scalar_keeps_float32():
    layer = LeakyReLU(np.float64(0.2))
    y = layer.forward(-np.ones((2, 3), dtype=np.float32))
    assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32


@pytest.mark.parametrize("make", [lambda: LeakyReLU("0.1"), lambda: LeakyReLU(float("nan")),
                                  lambda: ReLU(inplace="yes"), lambda: Softmax(1.5)])
def test_config_errors(make):
    with pytest.raises(ConfigError):
        make()


def test_get_config():
    assert LeakyReLU(0.3).get_config() == {"negative_slope": 0.3, "inplace": False}
    assert Softmax().get_config() == {"dim": 1}
    assert ReLU().get_config() == {"inplace": False}
    assert Sigmoid().get_config() == {} and Tanh().get_config() == {}
