import math
import warnings

import numpy as np
import pytest

from cnnx.engine.functional.softmax import log_softmax, logsumexp, sigmoid, softmax, softplus

SEEDS = range(30)


def _random_case(seed):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(d) for d in rng.integers(1, 6, size=ndim))
    axis = int(rng.integers(-ndim, ndim))
    return rng.standard_normal(shape) * 3, axis


def _plain_softmax(x, axis):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_functions_match_plain_formulas(seed):
    x, axis = _random_case(seed)
    expected = _plain_softmax(x, axis)
    np.testing.assert_allclose(softmax(x, axis), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(log_softmax(x, axis), np.log(expected), rtol=1e-12, atol=1e-12)
    lse = np.log(np.exp(x).sum(axis=axis))
    np.testing.assert_allclose(logsumexp(x, axis), lse, rtol=1e-12)
    np.testing.assert_allclose(logsumexp(x, axis, keepdims=True), np.expand_dims(lse, axis))
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    np.testing.assert_allclose(softplus(x), np.log1p(np.exp(x)), rtol=1e-12)


def test_huge_logits_stay_finite_and_exact():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, ls, lse = softmax(x), log_softmax(x), logsumexp(x, axis=1)
        sig, sp = sigmoid(x), softplus(x)
    np.testing.assert_array_equal(s[0], [1, 0, 0])
    np.testing.assert_allclose(s[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(ls[0], [0, -2e4, -1e4])
    np.testing.assert_allclose(lse, [1e4, -1e4 + math.log(3)])
    np.testing.assert_array_equal(sig[0], [1, 0, 0.5])
    np.testing.assert_allclose(sp[0], [1e4, 0, math.log(2)])
    for arr in (s, ls, lse, sig, sp):
        assert arr.dtype == np.float32 and np.all(np.isfinite(arr))


def test_sigmoid_keeps_relative_precision_in_the_tails():
    assert sigmoid(np.array([-50.0]))[0] == pytest.approx(math.exp(-50), rel=1e-12)
    assert 1 - sigmoid(np.array([20.0]))[0] == pytest.approx(math.exp(-20), rel=1e-6)
    tail32 = sigmoid(np.array([-80.0], dtype=np.float32))[0]
    assert tail32 == pytest.approx(math.exp(-80), rel=1e-5)


def test_infinite_inputs_give_the_limits():
    x = np.array([[-np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lse = logsumexp(x, axis=1)
        s = softmax(x[:1])
    assert lse[1] == -np.inf
    assert lse[0] == pytest.approx(math.log(1 + math.e))
    assert s[0, 0] == 0 and s[0].sum() == pytest.approx(1)


@pytest.mark.parametrize("fn", [softmax, log_softmax, logsumexp, sigmoid, softplus])
def test_float32_in_float32_out(fn):
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    assert fn(x).dtype == np.float32


def test_out_may_alias_the_input():
    x = np.random.default_rng(1).standard_normal((3, 4))
    expected_s, expected_sig = _plain_softmax(x, -1), 1 / (1 + np.exp(-x))
    y = x.copy()
    assert softmax(y, out=y) is y
    np.testing.assert_allclose(y, expected_s)
    z = x.copy()
    assert sigmoid(z, out=z) is z
    np.testing.assert_allclose(z, expected_sig)


def test_inputs_are_not_modified():
    x = np.random.default_rng(2).standard_normal((3, 4))
    before = x.copy()
    for fn in (softmax, log_softmax, logsumexp, sigmoid, softplus):
        fn(x)
    np.testing.assert_array_equal(x, before)
