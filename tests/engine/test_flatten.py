import numpy as np
import pytest

from cnnx.engine.layers.flatten import Flatten
from cnnx.testing.gradcheck import check_float32, check_gradients


def _random_shape(seed):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 5))
    return tuple(int(d) for d in rng.integers(1, 6, size=ndim)), int(rng.integers(1, 6))


@pytest.mark.parametrize("seed", range(30))
def test_gradients(seed):
    shape, batch = _random_shape(seed)
    check_gradients(Flatten(), shape, batch_size=batch, seed=seed)


@pytest.mark.parametrize("seed", range(3))
def test_float32(seed):
    shape, batch = _random_shape(seed)
    check_float32(Flatten(), shape, batch_size=batch, seed=seed)


def test_flattens_in_c_order_like_pytorch():
    layer = Flatten()
    assert layer.build((2, 3, 4), np.random.default_rng(0)) == (24,)
    x = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    y = layer.forward(x)
    assert y.shape == (2, 24)
    # feature index c*H*W + h*W + w
    assert y[1, 1 * 12 + 2 * 4 + 3] == x[1, 1, 2, 3]
    g = np.random.default_rng(0).standard_normal(y.shape)
    np.testing.assert_array_equal(layer.backward(g), g.reshape(x.shape))


def test_non_contiguous_and_empty_batches():
    layer = Flatten()
    layer.build((3, 2), np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 4, 3)).transpose(0, 2, 1)[:, :, :2]
    np.testing.assert_array_equal(layer.forward(x), np.array([s.ravel() for s in x]))
    assert layer.backward(np.ones((2, 6))).shape == (2, 3, 2)
    assert layer.forward(np.zeros((0, 3, 2))).shape == (0, 6)
