import math
import warnings

import numpy as np
import pytest

from cnnx.engine.functional.softmax import log_softmax, softmax
from cnnx.engine.losses.bce import BCELoss
from cnnx.engine.losses.base import ProbabilitiesAsLogitsWarning
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.losses.mse import MSELoss
from cnnx.errors import ConfigError, DataError
from cnnx.testing.gradcheck import check_loss_gradients

SEEDS = range(30)


def _sizes(seed):
    rng = np.random.default_rng(seed)
    return rng, int(rng.integers(1, 9)), int(rng.integers(2, 8))


# -- cross-entropy ---------------------------------------------------------------------------
def _plain_cross_entropy(logits, labels, smoothing=0.0):
    n, k = logits.shape
    total = 0.0
    for i in range(n):
        probs = [math.exp(z) / sum(math.exp(v) for v in logits[i]) for z in logits[i]]
        target = [(1 - smoothing) * (j == labels[i]) + smoothing / k for j in range(k)]
        total -= sum(t * math.log(p) for t, p in zip(target, probs))
    return total / n


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_entropy_value_and_gradients(seed):
    rng, n, k = _sizes(seed)
    smoothing = 0.0 if seed % 3 == 0 else float(rng.uniform(0, 0.5))
    logits = 3 * rng.standard_normal((n, k))
    labels = rng.integers(0, k, n)
    loss = CrossEntropyLoss(label_smoothing=smoothing)
    value, _ = loss(logits, labels)
    assert value == pytest.approx(_plain_cross_entropy(logits, labels, smoothing), rel=1e-12)
    check_loss_gradients(loss, logits, labels, eps=1e-6, rtol=1e-6, atol=1e-9, seed=seed)


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    logits = np.random.default_rng(0).standard_normal((4, 3))
    labels = np.array([2, 0, 1, 2])
    _, grad = CrossEntropyLoss()(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(grad, (probs - np.eye(3)[labels]) / 4, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_is_stable_for_huge_logits(dtype, smoothing):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = CrossEntropyLoss(smoothing)(logits, np.array([1, 0]))
    assert math.isfinite(value) and np.all(np.isfinite(grad))
    assert grad.dtype == dtype and isinstance(value, float)
    if not smoothing:
        assert value == pytest.approx((2e4 + 2e4 + math.log(2)) / 2)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_agrees_with_log_softmax_on_infinite_logits(smoothing):
    """-inf logits (masked classes) and a +inf logit give per row what log_softmax gives:
    the loss of a masked target is inf, a +inf logit makes the others' probability 0, and an
    all -inf row is nan, with the gradient exp(log_softmax) - target in every case."""
    inf = np.inf
    logits = np.array([
        [0.0, -inf, 2.0, -inf],
        [-inf, 1.0, -inf, 3.0],
        [1e4, -inf, -1e4, 0.0],
        [1.0, -inf, 0.0, 2.0],   # its target is masked
        [inf, 0.0, 1.0, -inf],
        [inf, 0.0, 1.0, -inf],   # its target is the +inf logit
        [-inf, -inf, -inf, -inf],
    ], dtype=np.float32)
    labels = np.array([2, 1, 0, 1, 1, 0, 0])
    n, k = logits.shape
    target = np.full((n, k), smoothing / k, dtype=np.float32)
    target[np.arange(n), labels] += 1 - smoothing
    loss = CrossEntropyLoss(smoothing)
    with np.errstate(all="ignore"):
        log_p = log_softmax(logits, axis=1)
        # Only the smoothing term reads every entry (0 * -inf would be nan without it).
        expected = -(1 - smoothing) * log_p[np.arange(n), labels]
        if smoothing:
            expected -= smoothing / k * log_p.sum(axis=1)
        per_row = [loss(logits[i:i + 1], labels[i:i + 1])[0] for i in range(n)]
        value, grad = loss(logits, labels)
        expected_grad = (np.exp(log_p) - target) / n
    np.testing.assert_allclose(per_row, expected, rtol=1e-6)
    np.testing.assert_allclose(loss(logits[:3], labels[:3])[0], expected[:3].mean(), rtol=1e-6)
    assert np.isnan(value)  # the mean over rows with a nan one
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-7)
    assert np.isinf(expected[3]) and np.isnan(expected[-1])
    assert smoothing or np.isfinite(expected[:3]).all()  # with smoothing a masked class costs inf


def test_cross_entropy_float32_in_float32_out_and_input_untouched():
    logits = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    before = logits.copy()
    value, grad = CrossEntropyLoss()(logits, np.array([0, 1, 2, 3, 0], dtype=np.int32))
    assert grad.dtype == np.float32 and isinstance(value, float)
    np.testing.assert_array_equal(logits, before)


def test_cross_entropy_accepts_column_and_whole_float_labels():
    logits = np.random.default_rng(0).standard_normal((3, 4))
    expected = CrossEntropyLoss()(logits, np.array([0, 3, 1]))
    for labels in (np.array([[0], [3], [1]]), np.array([0.0, 3.0, 1.0])):
        value, grad = CrossEntropyLoss()(logits, labels)
        assert value == expected[0]
        np.testing.assert_array_equal(grad, expected[1])


@pytest.mark.parametrize("bad", [4, -1, 10])
def test_cross_entropy_names_out_of_range_labels(bad):
    labels = np.array([0, 1, bad])
    with pytest.raises(DataError, match=rf"label {bad} at index 2 .*4 classes.*\[0, 4\)"):
        CrossEntropyLoss()(np.zeros((3, 4)), labels)


@pytest.mark.parametrize("logits, labels, match", [
    (np.zeros((3, 4)), np.array([0.5, 1, 2]), "integers"),
    (np.zeros((3, 4)), np.array([0, 1]), "batch size"),
    (np.zeros(4), np.array([0, 1, 2, 3]), r"\(N, classes\)"),
    (np.zeros((3, 4)), np.zeros((3, 4), dtype=int), r"\(N,\)"),
    (np.zeros((0, 4)), np.zeros(0, dtype=int), "empty"),
    (np.zeros((2, 4), dtype=int), np.array([0, 1]), "floating"),
])
def test_cross_entropy_data_errors(logits, labels, match):
    with pytest.raises(DataError, match=match):
        CrossEntropyLoss()(logits, labels)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.1", None])
def test_cross_entropy_config_errors(bad):
    with pytest.raises(ConfigError, match="label_smoothing"):
        CrossEntropyLoss(bad)


# -- class weights ---------------------------------------------------------------------------
def _plain_weighted_cross_entropy(logits, labels, weight, smoothing):
    """PyTorch's definition, one sample at a time."""
    n, k = logits.shape
    total = 0.0
    for i in range(n):
        log_probs = [z - math.log(sum(math.exp(v) for v in logits[i])) for z in logits[i]]
        total -= (1 - smoothing) * weight[labels[i]] * log_probs[labels[i]]
        total -= smoothing / k * sum(w * lp for w, lp in zip(weight, log_probs))
    return total / sum(weight[y] for y in labels)


@pytest.mark.parametrize("seed", SEEDS)
def test_weighted_cross_entropy_value_and_gradients(seed):
    rng, n, k = _sizes(seed)
    smoothing = 0.0 if seed % 2 == 0 else float(rng.uniform(0, 0.5))
    weight = rng.uniform(0, 3, k)
    weight[rng.integers(0, k)] = 0.0  # a class that does not count
    logits = 3 * rng.standard_normal((n, k))
    labels = rng.integers(0, k, n)
    if weight[labels].sum() == 0:
        labels[0] = int(np.argmax(weight))
    loss = CrossEntropyLoss(label_smoothing=smoothing, weight=weight)
    value, _ = loss(logits, labels)
    assert value == pytest.approx(_plain_weighted_cross_entropy(logits, labels, weight, smoothing), rel=1e-12)
    check_loss_gradients(loss, logits, labels, eps=1e-6, rtol=1e-6, atol=1e-9, seed=seed)


def test_equal_class_weights_change_nothing_and_float32_stays_float32():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((9, 4)).astype(np.float32), rng.integers(0, 4, 9)
    for smoothing in (0.0, 0.1):
        plain = CrossEntropyLoss(smoothing)(logits, labels)
        weighted = CrossEntropyLoss(smoothing, weight=[2.5] * 4)(logits, labels)
        assert weighted[0] == pytest.approx(plain[0], rel=1e-6) and weighted[1].dtype == np.float32
        np.testing.assert_allclose(weighted[1], plain[1], atol=1e-7)


def test_a_batch_of_zero_weighted_classes_counts_for_nothing():
    """PyTorch gives 0/0 = NaN there, which would stop a run at a batch that drew no weighted class."""
    value, grad = CrossEntropyLoss(weight=[0.0, 1.0, 1.0])(np.ones((2, 3), np.float32), np.array([0, 0]))
    assert value == 0.0 and not grad.any() and grad.dtype == np.float32


@pytest.mark.parametrize("bad", [[1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")], [[1.0, 2.0]], "balanced"])
def test_class_weights_config_errors(bad):
    with pytest.raises(ConfigError, match=r"^cross_entropy: weight=.* one finite number >= 0 per class"):
        CrossEntropyLoss(weight=bad)


def test_class_weights_must_match_the_classes():
    with pytest.raises(DataError, match="weight has 2 entries for 3 classes"):
        CrossEntropyLoss(weight=[1.0, 2.0])(np.zeros((2, 3)), np.array([0, 1]))


def test_weighted_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits, labels, weight = 4 * rng.standard_normal((8, 5)), rng.integers(0, 5, 8), rng.uniform(0, 2, 5)
    for smoothing in (0.0, 0.25):
        o = torch.tensor(logits, requires_grad=True)
        expected = torch.nn.functional.cross_entropy(o, torch.tensor(labels), weight=torch.tensor(weight),
                                                     label_smoothing=smoothing)
        expected.backward()
        value, grad = CrossEntropyLoss(smoothing, weight=weight)(logits, labels)
        assert value == pytest.approx(expected.item(), rel=1e-12)
        np.testing.assert_allclose(grad, o.grad.numpy(), atol=1e-15)


# -- binary cross-entropy --------------------------------------------------------------------
def _bce_shapes(seed, n):
    # outputs (N, 1) or (N,), targets (N,) or (N, 1), in every combination
    return [((n, 1), (n,)), ((n,), (n,)), ((n, 1), (n, 1)), ((n,), (n, 1))][seed % 4]


@pytest.mark.parametrize("seed", SEEDS)
def test_bce_on_probabilities(seed):
    rng, n, _ = _sizes(seed)
    out_shape, target_shape = _bce_shapes(seed, n)
    p = rng.uniform(0.05, 0.95, out_shape)
    t = rng.integers(0, 2, target_shape)
    loss = BCELoss()
    value, grad = loss(p, t)
    pf, tf = p.ravel(), t.ravel()
    plain = -sum(ti * math.log(pi) + (1 - ti) * math.log(1 - pi) for pi, ti in zip(pf, tf)) / n
    assert value == pytest.approx(plain, rel=1e-12)
    assert grad.shape == p.shape
    check_loss_gradients(loss, p, t, eps=1e-7, rtol=1e-6, atol=1e-9, seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_bce_on_logits(seed):
    rng, n, _ = _sizes(seed)
    out_shape, target_shape = _bce_shapes(seed, n)
    z = 4 * rng.standard_normal(out_shape)
    t = rng.uniform(0, 1, target_shape) if seed % 5 == 0 else rng.integers(0, 2, target_shape)
    loss = BCELoss(from_logits=True)
    value, _ = loss(z, t)
    sig = [1 / (1 + math.exp(-v)) for v in z.ravel()]
    plain = -sum(ti * math.log(s) + (1 - ti) * math.log(1 - s)
                 for s, ti in zip(sig, t.ravel())) / n
    assert value == pytest.approx(plain, rel=1e-10)
    check_loss_gradients(loss, z, t, eps=1e-6, rtol=1e-6, atol=1e-9, seed=seed)


@pytest.mark.parametrize("from_logits", [False, True])
def test_bce_multi_label_gradient_is_the_mean_over_every_element(from_logits):
    # (N, K) multi-label outputs: the value is a mean over N*K terms, so a gradient scaled by
    # 1/N alone would be K times too large and only show up here, never on (N, 1).
    rng = np.random.default_rng(7)
    outputs = 3 * rng.standard_normal((5, 3)) if from_logits else rng.uniform(0.05, 0.95, (5, 3))
    targets = rng.integers(0, 2, (5, 3))
    check_loss_gradients(BCELoss(from_logits=from_logits), outputs, targets,
                         eps=1e-7, rtol=1e-6, atol=1e-9)


def test_bce_with_logits_equals_bce_after_sigmoid():
    z = np.random.default_rng(0).standard_normal((6, 1)) * 2
    t = np.array([0, 1, 1, 0, 1, 0])
    p = 1 / (1 + np.exp(-z))
    v_logits, g_logits = BCELoss(from_logits=True)(z, t)
    v_probs, g_probs = BCELoss()(p, t)
    assert v_logits == pytest.approx(v_probs, rel=1e-12)
    np.testing.assert_allclose(g_logits, g_probs * p * (1 - p), rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_is_stable_at_the_extremes(dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = np.array([[-1e4], [1e4], [0.0], [-1e4]], dtype=dtype)
        t = np.array([1, 1, 0, 0])
        value, grad = BCELoss(from_logits=True)(z, t)
        assert value == pytest.approx((1e4 + 0 + math.log(2) + 0) / 4)
        np.testing.assert_allclose(grad.ravel(), np.array([-1, 0, 0.5, 0]) / 4, atol=1e-7)
        assert grad.dtype == dtype
        # saturated probabilities: PyTorch's clamps (log >= -100) keep everything finite
        p = np.array([0.0, 1.0, 1.0, 0.0], dtype=dtype)
        value, grad = BCELoss()(p, np.array([1, 0, 1, 0]))
        assert value == pytest.approx(50.0)
        assert np.all(np.isfinite(grad)) and grad.dtype == dtype


def test_bce_rejects_logits_when_probabilities_are_expected():
    with pytest.raises(DataError, match="from_logits"):
        BCELoss()(np.array([[-2.0], [0.5]]), np.array([0, 1]))


@pytest.mark.parametrize("outputs, targets, match", [
    (np.full((2, 1), 0.5), np.array([0, 2]), r"\[0, 1\]"),
    (np.full((2, 1), 0.5), np.array([0, np.nan]), r"\[0, 1\]"),
    (np.full((3, 2), 0.5), np.array([0, 1, 1]), "one target per output"),
])
def test_bce_data_errors(outputs, targets, match):
    with pytest.raises(DataError, match=match):
        BCELoss()(outputs, targets)


def test_bce_config():
    with pytest.raises(ConfigError, match="from_logits"):
        BCELoss(from_logits="yes")
    assert BCELoss(True).get_config() == {"from_logits": True}
    assert repr(BCELoss()) == "BCELoss(from_logits=False)"


# -- mean squared error ----------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_mse_value_and_gradients(seed):
    rng, n, k = _sizes(seed)
    outputs = rng.standard_normal((n, k))
    if seed % 2:
        targets = rng.integers(0, k, n)
        dense_targets = np.eye(k)[targets]
    else:
        targets = dense_targets = rng.standard_normal((n, k))
    value, grad = MSELoss()(outputs, targets)
    plain = sum((o - t) ** 2 for o, t in zip(outputs.ravel(), dense_targets.ravel())) / (n * k)
    assert value == pytest.approx(plain, rel=1e-12)
    np.testing.assert_allclose(grad, 2 * (outputs - dense_targets) / (n * k), rtol=1e-12)
    check_loss_gradients(MSELoss(), outputs, targets, seed=seed)


def test_mse_regression_column_accepts_flat_targets_and_keeps_float32():
    outputs = np.array([[1.0], [2.0], [4.0]], dtype=np.float32)
    targets = np.array([1.0, 1.0, 1.0])  # float64 must not promote the gradient
    value, grad = MSELoss()(outputs, targets)
    assert value == pytest.approx((0 + 1 + 9) / 3)
    assert grad.shape == (3, 1) and grad.dtype == np.float32
    np.testing.assert_allclose(grad.ravel(), [0, 2 / 3, 2.0])


@pytest.mark.parametrize("outputs, targets, match", [
    (np.zeros((3, 4)), np.array([0, 1, 4]), r"label 4 at index 2.*4 classes"),
    (np.zeros((3, 4)), np.zeros((3, 5)), "shaped"),
    (np.zeros((3, 4)), np.zeros(2), "batch size"),
])
def test_mse_data_errors(outputs, targets, match):
    with pytest.raises(DataError, match=match):
        MSELoss()(outputs, targets)


# -- against PyTorch, when it is installed ---------------------------------------------------
def test_losses_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)

    def torch_value_and_grad(fn, outputs, *args, **kwargs):
        o = torch.tensor(outputs, requires_grad=True)
        value = fn(o, *args, **kwargs)
        value.backward()
        return value.item(), o.grad.numpy()

    logits, labels = 5 * rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    for smoothing in (0.0, 0.2):
        expected = torch_value_and_grad(F.cross_entropy, logits, torch.tensor(labels),
                                        label_smoothing=smoothing)
        got = CrossEntropyLoss(smoothing)(logits, labels)
        assert got[0] == pytest.approx(expected[0], rel=1e-12)
        np.testing.assert_allclose(got[1], expected[1], atol=1e-15)

    p = np.array([0.0, 1e-30, 0.3, 0.9, 1.0, 1 - 1e-9])
    t = np.array([1.0, 1, 0, 1, 0, 1])
    expected = torch_value_and_grad(F.binary_cross_entropy, p, torch.tensor(t))
    got = BCELoss()(p, t)
    assert got[0] == pytest.approx(expected[0], rel=1e-12)
    # torch stores its 1e-12 floor as a float32 constant: a 4e-9 relative difference
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-7)

    z = np.array([-1e4, -30.0, 0.0, 2.0, 1e4])
    t = np.array([1.0, 0, 1, 0, 0.3])
    expected = torch_value_and_grad(F.binary_cross_entropy_with_logits, z, torch.tensor(t))
    got = BCELoss(from_logits=True)(z, t)
    assert got[0] == pytest.approx(expected[0], rel=1e-12)
    np.testing.assert_allclose(got[1], expected[1], atol=1e-15)

    o, target = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    expected = torch_value_and_grad(F.mse_loss, o, torch.tensor(target))
    got = MSELoss()(o, target)
    assert got[0] == pytest.approx(expected[0], rel=1e-12)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-12)


def test_cross_entropy_gradient_does_not_depend_on_the_logits_memory_order():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    for smoothing in (0.0, 0.2):
        loss = CrossEntropyLoss(label_smoothing=smoothing)
        value, grad = loss(logits, labels)
        value_f, grad_f = loss(np.asfortranarray(logits), labels)
        assert value_f == value
        np.testing.assert_array_equal(grad_f, grad)
        np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-7)


def test_cross_entropy_warns_once_when_given_probabilities():
    """A softmax layer before it trains badly (its gradient is flattened) and silently."""
    logits = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    labels = np.arange(8) % 5
    loss = CrossEntropyLoss()
    with pytest.warns(ProbabilitiesAsLogitsWarning, match=r"^cross_entropy: the model's outputs look like probabilities"):
        loss(softmax(logits, axis=1), labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(softmax(logits, axis=1), labels)  # once per loss
        fresh = CrossEntropyLoss()
        fresh(logits, labels)  # logits: nothing to say, and not looked at again
        fresh(softmax(logits, axis=1), labels)
        CrossEntropyLoss()(np.full((4, 5), 0.1, np.float32), labels[:4])  # in [0, 1], not summing to 1
