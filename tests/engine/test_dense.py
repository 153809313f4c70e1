import numpy as np
import pytest

from cnnx.engine.layers.dense import Dense
from cnnx.errors import ConfigError, ShapeError
from cnnx.testing.gradcheck import check_float32, check_gradients


def _random_config(seed):
    rng = np.random.default_rng(seed)
    return dict(
        in_features=int(rng.integers(1, 13)),
        out_features=int(rng.integers(1, 13)),
        batch=int(rng.integers(1, 8)),
        bias=bool(rng.integers(0, 2)),
    )


@pytest.mark.parametrize("seed", range(30))
def test_gradients(seed):
    c = _random_config(seed)
    layer = Dense(c["out_features"], bias=c["bias"])
    check_gradients(layer, (c["in_features"],), batch_size=c["batch"], seed=seed)
    assert set(dict(layer.named_parameters())) == ({"weight", "bias"} if c["bias"] else {"weight"})


@pytest.mark.parametrize("seed", range(3))
def test_float32(seed):
    c = _random_config(seed)
    layer = Dense(c["out_features"], bias=c["bias"])
    check_float32(layer, (c["in_features"],), batch_size=c["batch"])


def test_forward_and_backward_match_plain_sums():
    rng = np.random.default_rng(0)
    layer = Dense(4)
    layer.build((3,), rng)
    layer.params["bias"].data[:] = rng.standard_normal(4)
    w, b = layer.params["weight"].data, layer.params["bias"].data
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y = layer.forward(x)
    expected = np.array(
        [[sum(x[n, i] * w[o, i] for i in range(3)) + b[o] for o in range(4)] for n in range(5)]
    )
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    g = rng.standard_normal((5, 4)).astype(np.float32)
    dx = layer.backward(g)
    np.testing.assert_allclose(
        layer.params["weight"].grad,
        [[sum(g[n, o] * x[n, i] for n in range(5)) for i in range(3)] for o in range(4)],
        rtol=1e-5, atol=1e-6,
    )
    np.testing.assert_allclose(layer.params["bias"].grad, g.sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(dx, [[sum(g[n, o] * w[o, i] for o in range(4)) for i in range(3)]
                                    for n in range(5)], rtol=1e-5, atol=1e-6)


def test_backward_assigns_rather_than_accumulates():
    rng = np.random.default_rng(0)
    layer = Dense(2)
    layer.build((3,), rng)
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer.forward(x)
    layer.backward(g)
    first = layer.params["weight"].grad.copy()
    layer.backward(g)
    np.testing.assert_array_equal(layer.params["weight"].grad, first)


def test_pytorch_layout_and_init():
    layer = Dense(300)
    assert layer.build((800,), np.random.default_rng(0)) == (300,)
    w, b = layer.params["weight"].data, layer.params["bias"].data
    assert w.shape == (300, 800) and b.shape == (300,)
    assert w.dtype == b.dtype == np.float32
    limit = 1 / np.sqrt(800)  # torch.nn.Linear's default: U(±1/sqrt(in_features)), bias too
    assert w.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)
    assert np.abs(b).max() <= limit and b.any()
    assert layer.parameter_count() == 300 * 800 + 300


def test_same_seed_same_weights():
    def weights(seed):
        layer = Dense(5)
        layer.build((7,), np.random.default_rng(seed))
        return layer.params["weight"].data

    assert np.array_equal(weights(3), weights(3))
    assert not np.array_equal(weights(3), weights(4))


def test_image_input_asks_for_a_flatten_layer():
    with pytest.raises(ShapeError, match=r"\(6, 5, 5\).*flatten"):
        Dense(10).build((6, 5, 5), np.random.default_rng(0))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10", None])
def test_out_features_must_be_a_positive_integer(bad):
    with pytest.raises(ConfigError, match="out_features"):
        Dense(bad)


def test_bias_must_be_boolean_and_config_round_trips():
    with pytest.raises(ConfigError, match="bias"):
        Dense(3, bias="no")
    layer = Dense(np.int64(3), bias=False)
    assert layer.get_config() == {"out_features": 3, "bias": False, "init": "kaiming_uniform"}
    assert repr(layer) == "Dense(out_features=3, bias=False, init='kaiming_uniform')"
