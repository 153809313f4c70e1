import numpy as np
import pytest

from cnnx.engine.functional.im2col import to_chwn
from cnnx.engine.layers.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from cnnx.engine.sequential import Sequential
from cnnx.errors import ConfigError, ShapeError
from cnnx.testing.gradcheck import check_float32, check_gradients


def reference_pool(x, kernel, stride, padding, kind):
    """Direct definition, one window at a time. Returns the output and, for max pooling, the
    flat index (into the padded input plane) of each window's first maximum."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    pad_value = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    out_h = (xp.shape[2] - kh) // sh + 1
    out_w = (xp.shape[3] - kw) // sw + 1
    n, c = x.shape[:2]
    y = np.zeros((n, c, out_h, out_w))
    winner = np.zeros((n, c, out_h, out_w, 2), dtype=int)
    for b in range(n):
        for ch in range(c):
            for i in range(out_h):
                for j in range(out_w):
                    window = xp[b, ch, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    if kind == "max":
                        first = np.argmax(window)  # first maximum in row-major order
                        y[b, ch, i, j] = window.flat[first]
                        winner[b, ch, i, j] = (i * sh + first // kw, j * sw + first % kw)
                    else:
                        y[b, ch, i, j] = window.sum() / (kh * kw)
    return y, winner


def reference_max_pool_grad(x, g, kernel, stride, padding):
    _, winner = reference_pool(x, kernel, stride, padding, "max")
    (ph, pw) = padding
    grad = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * ph, x.shape[3] + 2 * pw))
    for index in np.ndindex(g.shape):
        b, ch = index[:2]
        r, s = winner[index]
        grad[b, ch, r, s] += g[index]
    return grad[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]


def random_config(seed):
    """Overlapping and gapped windows, padding up to half the kernel, odd and non-tiling sizes."""
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 5, 2))
    stride = tuple(int(s) for s in rng.integers(1, 4, 2))
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
    hw = tuple(int(rng.integers(max(1, k - 2 * p), k + 7)) for k, p in zip(kernel, padding))
    return dict(kernel=kernel, stride=stride, padding=padding, hw=hw,
                channels=int(rng.integers(1, 4)), batch=int(rng.integers(2, 5)))


CONFIGS = [random_config(seed) for seed in range(36)] + [
    # the 2x2, stride-2, unpadded pooling of most CNNs has a path of its own: even, odd and
    # one-window sizes
    dict(kernel=(2, 2), stride=(2, 2), padding=(0, 0), hw=hw, channels=channels, batch=3)
    for hw, channels in (((4, 4), 2), ((5, 7), 3), ((2, 3), 1), ((8, 6), 2))
]


def config_id(c):
    return f"k{c['kernel']}-s{c['stride']}-p{c['padding']}-hw{c['hw']}-c{c['channels']}-n{c['batch']}".replace(" ", "")


def built(cls, c, dtype=np.float64):
    layer = cls(c["kernel"], c["stride"], c["padding"])
    layer.build((c["channels"], *c["hw"]), np.random.default_rng(0))
    layer.to(dtype)
    return layer


def separated_input(rng, shape):
    """Distinct values at least 0.01 apart, so finite differences never cross a tie."""
    return rng.permutation(np.prod(shape)).reshape(shape) * 0.01 - 0.5


@pytest.mark.parametrize("cls, kind", [(MaxPool2D, "max"), (AvgPool2D, "avg")])
@pytest.mark.parametrize("c", CONFIGS, ids=config_id)
def test_forward_matches_direct_definition(c, cls, kind):
    layer = built(cls, c)
    x = np.random.default_rng(1).standard_normal((c["batch"], c["channels"], *c["hw"]))
    y = layer.forward(x)
    expected, _ = reference_pool(x, c["kernel"], c["stride"], c["padding"], kind)
    assert y.shape == (c["batch"], *layer.output_shape) == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("c", CONFIGS, ids=config_id)
def test_gradients(c, cls):
    layer = cls(c["kernel"], c["stride"], c["padding"])
    check_gradients(layer, (c["channels"], *c["hw"]), batch_size=c["batch"], seed=2,
                    make_input=separated_input)


@pytest.mark.parametrize("c", CONFIGS, ids=config_id)
def test_max_pool_routes_ties_to_the_first_maximum_only(c):
    layer = built(MaxPool2D, c)
    rng = np.random.default_rng(3)
    # Few distinct values: most windows hold their maximum more than once.
    x = rng.integers(0, 3, (c["batch"], c["channels"], *c["hw"])).astype(np.float64)
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    expected = reference_max_pool_grad(x, g, c["kernel"], c["stride"], c["padding"])
    np.testing.assert_allclose(layer.backward(g), expected, rtol=1e-12, atol=1e-12)


def test_max_pool_after_relu_zeros_sends_one_gradient_per_window():
    layer = MaxPool2D(2)
    layer.build((1, 4, 4), None)
    y = layer.forward(np.zeros((1, 1, 4, 4), np.float32))
    grad = layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(grad[0, 0], [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


def test_max_pool_padding_never_wins():
    layer = MaxPool2D(3, stride=1, padding=1)
    layer.build((1, 2, 2), None)
    x = -np.arange(1.0, 5.0).reshape(1, 1, 2, 2)  # all negative: zero padding would win
    np.testing.assert_array_equal(layer.forward(x)[0, 0], [[-1, -1], [-1, -1]])


def test_avg_pool_padding_counts_in_the_divisor():
    layer = AvgPool2D(3, stride=1, padding=1)
    layer.build((1, 2, 2), None)
    y = layer.forward(np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(y[0, 0], np.full((2, 2), 4 / 9))  # PyTorch count_include_pad=True


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("c", CONFIGS[:3], ids=config_id)
def test_float32_is_preserved(c, cls):
    check_float32(cls(c["kernel"], c["stride"], c["padding"]), (c["channels"], *c["hw"]), batch_size=c["batch"])


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_results_survive_later_steps_and_dtype_changes(cls):
    c = dict(kernel=(3, 2), stride=(1, 2), padding=(1, 1), hw=(5, 6), channels=2, batch=3)
    kind = "max" if cls is MaxPool2D else "avg"
    layer = built(cls, c, np.float32)
    rng = np.random.default_rng(4)
    first_x = rng.standard_normal((3, 2, 5, 6)).astype(np.float32)
    first_y = layer.forward(first_x)
    first_grad = layer.backward(np.ones_like(first_y))
    first_grad_copy = first_grad.copy()
    layer.to(np.float64)
    x = rng.standard_normal((4, 2, 5, 6))
    np.testing.assert_allclose(layer.forward(x), reference_pool(x, c["kernel"], c["stride"], c["padding"], kind)[0])
    layer.backward(np.ones((4, 2, *layer.output_shape[1:])))
    np.testing.assert_allclose(first_y, reference_pool(first_x, c["kernel"], c["stride"], c["padding"], kind)[0], rtol=1e-6)
    np.testing.assert_array_equal(first_grad, first_grad_copy)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_outputs_chain_into_the_next_layer_without_copies(cls):
    layer = cls(2)
    layer.build((3, 6, 6), None)
    x = np.ascontiguousarray(np.ones((3, 6, 6, 4)) * np.arange(4)).transpose(3, 0, 1, 2)  # CHWN memory
    y = layer.forward(x)
    assert np.shares_memory(to_chwn(y), y)
    grad = layer.backward(np.ones_like(y))
    assert np.shares_memory(to_chwn(grad), grad)


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1)])
def test_max_pool_backward_after_an_eval_forward_matches_training_mode(kernel, stride, padding):
    # Saliency maps and adversarial inputs take gradients of an eval-mode model, as in PyTorch.
    x = np.random.default_rng(0).integers(-2, 3, (2, 3, 7, 7)).astype(np.float32)  # ties
    layer = MaxPool2D(kernel, stride, padding)
    layer.build((3, 7, 7), None)
    y = layer.forward(x, training=True)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    expected = layer.backward(g).copy()
    np.testing.assert_array_equal(layer.forward(x, training=False), y)
    np.testing.assert_array_equal(layer.backward(g), expected)


def test_max_pool_backward_before_forward_names_the_layer():
    layer = MaxPool2D(2)
    layer.build((1, 4, 4), None)
    with pytest.raises(RuntimeError, match=r"^MaxPool2D\(kernel_size=2.*backward needs a forward with gradients first"):
        layer.backward(np.ones((1, 1, 2, 2)))
    net = Sequential({"pool": layer}, where="net")
    net.build((1, 4, 4), None)
    with pytest.raises(RuntimeError, match=r"^layer net\.pool \(MaxPool2D\): .*backward needs a forward with gradients first"):
        net.backward(np.ones((1, 1, 2, 2)))


def test_stride_defaults_to_kernel_and_config_round_trips():
    layer = MaxPool2D(3)
    assert layer.stride == (3, 3)
    assert layer.build((2, 7, 8), None) == (2, 2, 2)
    assert layer.get_config() == {"kernel_size": 3, "stride": 3, "padding": 0}
    config = {"kernel_size": [2, 3], "stride": [1, 2], "padding": [1, 0]}
    assert AvgPool2D(**config).get_config() == config


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize(
    "kwargs, input_shape, fragment",
    [
        (dict(kernel_size=3), (1, 2, 5), "larger than the input"),
        (dict(kernel_size=(2, 4), padding=(0, 1)), (1, 3, 1), "larger than the input"),
        (dict(kernel_size=2, padding=2), (1, 8, 8), "half the kernel"),
        (dict(kernel_size=(3, 4), padding=(1, 3)), (1, 8, 8), "half the kernel"),
        (dict(kernel_size=2), (8, 8), r"\(C, H, W\)"),
    ],
)
def test_shape_errors(cls, kwargs, input_shape, fragment):
    layer = cls(**kwargs)
    with pytest.raises(ShapeError, match=fragment) as info:
        layer.build(input_shape, None)
    assert str(layer.kernel_size) in str(info.value)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("kwargs", [dict(kernel_size=0), dict(kernel_size=2, stride=0),
                                    dict(kernel_size=2, padding=-1), dict(kernel_size=[2, 2, 2])])
def test_bad_config_values(cls, kwargs):
    with pytest.raises(ConfigError):
        cls(**kwargs)


# -- global average pooling ----------------------------------------------------------------
@pytest.mark.parametrize("seed", range(30))
def test_global_avg_pool_forward_and_gradients(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 5)), int(rng.integers(1, 8)), int(rng.integers(1, 8)))
    layer = GlobalAvgPool2D()
    assert layer.build(shape, None) == (shape[0],)
    x = rng.standard_normal((3, *shape))
    expected = np.array([[x[n, c].sum() / (shape[1] * shape[2]) for c in range(shape[0])] for n in range(3)])
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)
    check_gradients(GlobalAvgPool2D(), shape, batch_size=3, seed=seed)


def test_global_avg_pool_float32_and_errors():
    check_float32(GlobalAvgPool2D(), (3, 5, 4))
    with pytest.raises(ShapeError, match=r"\(C, H, W\)"):
        GlobalAvgPool2D().build((12,), None)
