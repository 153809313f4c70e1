import numpy as np
import pytest

from cnnx.engine.layers.dropout import Dropout
from cnnx.errors import ConfigError
from cnnx.testing.gradcheck import check_float32, check_gradients


def _replay_mask(layer):
    layer.rng = np.random.default_rng(1234)


def _random_config(seed):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(d) for d in rng.integers(1, 7, size=ndim))
    return shape, int(rng.integers(1, 6)), float(rng.uniform(0, 0.9))


@pytest.mark.parametrize("seed", range(30))
def test_gradients_with_a_fixed_mask(seed):
    shape, batch, p = _random_config(seed)
    check_gradients(Dropout(p), shape, batch_size=batch, seed=seed, before_forward=_replay_mask)


@pytest.mark.parametrize("seed", range(5))
def test_gradients_in_eval_mode(seed):
    shape, batch, p = _random_config(seed)
    check_gradients(Dropout(p), shape, batch_size=batch, seed=seed, training=False)


@pytest.mark.parametrize("training", [True, False])
def test_float32(training):
    check_float32(Dropout(0.3), (4, 5), batch_size=3, training=training)


def _built(p, seed=0, shape=(1000,), **kw):
    layer = Dropout(p, **kw)
    layer.build(shape, np.random.default_rng(seed))
    return layer


def test_inverted_scaling_and_drop_rate():
    p = 0.3
    layer = _built(p, shape=(200, 100))
    x = np.ones((4, 200, 100), dtype=np.float32)
    y = layer.forward(x)
    kept = y != 0
    assert kept.mean() == pytest.approx(1 - p, abs=0.01)
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)
    assert y.mean() == pytest.approx(1.0, abs=0.02)
    g = np.full_like(y, 2.0)
    expected = np.where(kept, 2 / (1 - p), 0).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(g), expected)


def test_eval_and_p_zero_are_identities():
    x = np.random.default_rng(0).standard_normal((3, 1000))
    g = np.random.default_rng(1).standard_normal((3, 1000))
    for layer, training in [(_built(0.5), False), (_built(0.0), True)]:
        np.testing.assert_array_equal(layer.forward(x, training=training), x)
        np.testing.assert_array_equal(layer.backward(g), g)


def test_masks_are_reproducible_per_seed_and_leave_global_state_alone():
    x = np.ones((2, 1000))
    state = np.random.get_state()[1].copy()
    a, b, c = _built(0.5, seed=7), _built(0.5, seed=7), _built(0.5, seed=8)
    ya = [a.forward(x) for _ in range(2)]
    yb = [b.forward(x) for _ in range(2)]
    np.testing.assert_array_equal(ya[0], yb[0])
    np.testing.assert_array_equal(ya[1], yb[1])
    assert not np.array_equal(ya[0], ya[1])  # a fresh mask every step
    assert not np.array_equal(ya[0], c.forward(x))
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_build_does_not_draw_from_the_models_generator():
    # So inserting a dropout layer leaves every other layer's initial weights unchanged.
    rng = np.random.default_rng(5)
    Dropout(0.5).build((3,), rng)
    assert rng.random() == np.random.default_rng(5).random()


def test_inplace_gives_the_same_numbers():
    x = np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32)
    g = np.random.default_rng(1).standard_normal((2, 1000)).astype(np.float32)
    ref, inplace = _built(0.4, seed=3), _built(0.4, seed=3, inplace=True)
    y_ref, buf = ref.forward(x), x.copy()
    y = inplace.forward(buf)
    assert y is buf
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(inplace.backward(g), ref.backward(g))


def test_forward_leaves_input_untouched():
    x = np.random.default_rng(0).standard_normal((2, 1000))
    before = x.copy()
    _built(0.5).forward(x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("p", [-0.1, 1, 1.0, 1.5, float("nan"), "0.5", True, None])
def test_p_must_be_a_probability_below_one(p):
    with pytest.raises(ConfigError, match="dropout: p"):
        Dropout(p)


def test_get_config():
    assert Dropout(0.25).get_config() == {"p": 0.25, "inplace": False}


def test_an_input_in_a_convolutions_memory_order_comes_out_in_it():
    """A convolution's output is an NCHW view of CHWN memory; dropout gave a C-ordered NCHW
    array, which the next convolution had to copy back (the layout the kernels work in)."""
    from cnnx.engine.functional.im2col import to_nchw

    x = to_nchw(np.random.default_rng(0).standard_normal((8, 6, 6, 64)).astype(np.float32))
    layer = Dropout(0.3)
    layer.build(x.shape[1:], np.random.default_rng(0))
    y = layer.forward(x, training=True)
    assert y.transpose(1, 2, 3, 0).flags.c_contiguous
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-6)
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), np.where(kept, np.float32(1 / 0.7), 0))
