import numpy as np
import pytest

from cnnx.engine.functional import conv as conv_functional
from cnnx.engine.functional.im2col import Workspace, col2im, im2col, output_size, to_chwn
from cnnx.engine.layers.conv import Conv2D
from cnnx.errors import ConfigError, ShapeError
from cnnx.testing.gradcheck import check_float32, check_gradients


def reference_conv(x, weight, bias, stride, padding):
    """Direct definition, one output position at a time (slow but obviously right)."""
    (sh, sw), (ph, pw) = stride, padding
    out_c, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out_h = (xp.shape[2] - kh) // sh + 1
    out_w = (xp.shape[3] - kw) // sw + 1
    y = np.zeros((x.shape[0], out_c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            y[:, :, i, j] = np.tensordot(patch, weight, axes=([1, 2, 3], [1, 2, 3]))
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def random_config(seed):
    """A geometry drawn to cover stride 1–3, padding 0–2, non-square kernels, odd sizes and
    windows that do not tile the input; the kernel always fits the padded input."""
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 6, 2))
    stride = tuple(int(s) for s in rng.integers(1, 4, 2))
    padding = tuple(int(p) for p in rng.integers(0, 3, 2))
    hw = tuple(int(rng.integers(max(1, k - 2 * p), k + 7)) for k, p in zip(kernel, padding))
    return dict(
        in_channels=int(rng.integers(1, 5)),
        out_channels=int(rng.integers(1, 6)),
        kernel=kernel, stride=stride, padding=padding, hw=hw,
        batch=int(rng.integers(2, 5)),
        bias=bool(seed % 4),
    )


CONFIGS = [random_config(seed) for seed in range(40)]


def config_id(c):
    return (f"C{c['in_channels']}O{c['out_channels']}-k{c['kernel']}-s{c['stride']}-p{c['padding']}"
            f"-hw{c['hw']}-n{c['batch']}{'' if c['bias'] else '-nobias'}").replace(" ", "")


def make_layer(c):
    return Conv2D(c["out_channels"], c["kernel"], stride=c["stride"], padding=c["padding"], bias=c["bias"])


def built(c, dtype=np.float64, seed=0):
    layer = make_layer(c)
    layer.build((c["in_channels"], *c["hw"]), np.random.default_rng(seed))
    layer.to(dtype)
    if c["bias"]:
        layer.params["bias"].data[:] = np.random.default_rng(seed + 1).standard_normal(c["out_channels"])
    return layer


@pytest.mark.parametrize("c", CONFIGS, ids=config_id)
def test_forward_matches_direct_definition(c):
    layer = built(c)
    x = np.random.default_rng(2).standard_normal((c["batch"], c["in_channels"], *c["hw"]))
    y = layer.forward(x)
    bias = layer.params["bias"].data if c["bias"] else None
    expected = reference_conv(x, layer.params["weight"].data, bias, c["stride"], c["padding"])
    assert y.shape == (c["batch"], *layer.output_shape) == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c", CONFIGS, ids=config_id)
def test_gradients(c):
    check_gradients(make_layer(c), (c["in_channels"], *c["hw"]), batch_size=c["batch"], seed=3)


def stride1_config(seed):
    """A random geometry where both input-gradient routes apply: stride 1, padding < kernel."""
    rng = np.random.default_rng(1000 + seed)
    kernel = tuple(int(k) for k in rng.integers(1, 6, 2))
    padding = tuple(int(rng.integers(0, k)) for k in kernel)
    hw = tuple(int(rng.integers(max(1, k - 2 * p), k + 7)) for k, p in zip(kernel, padding))
    return dict(in_channels=int(rng.integers(1, 6)), out_channels=int(rng.integers(1, 6)), kernel=kernel,
                stride=(1, 1), padding=padding, hw=hw, batch=int(rng.integers(1, 5)), bias=bool(seed % 3))


@pytest.mark.parametrize("route", ["col2im", "transposed"])
@pytest.mark.parametrize("c", [stride1_config(seed) for seed in range(30)], ids=config_id)
def test_both_input_gradient_routes(c, route, monkeypatch):
    """Whichever route the size rule picks, each one is checked on its own at stride 1."""
    monkeypatch.setattr(conv_functional, "transposed_route_pays", lambda *shape: route == "transposed")
    check_gradients(make_layer(c), (c["in_channels"], *c["hw"]), batch_size=c["batch"], seed=4)


def test_transposed_route_reuses_its_columns_across_steps_and_batch_sizes(monkeypatch):
    """Its zero-padded column buffer is kept between steps; every input gradient stays exact."""
    c = dict(in_channels=3, out_channels=4, kernel=(3, 2), stride=(1, 1), padding=(2, 1),
             hw=(5, 4), batch=2, bias=True)
    routes = {"col2im": built(c, np.float32), "transposed": built(c, np.float32)}
    rng = np.random.default_rng(9)
    steps = []
    for batch in (2, 3, 2, 1):
        x = rng.standard_normal((batch, 3, 5, 4)).astype(np.float32)
        grads = {}
        for route, layer in routes.items():
            monkeypatch.setattr(conv_functional, "transposed_route_pays", lambda *shape, r=route: r == "transposed")
            y = layer.forward(x)
            grads[route] = layer.backward(np.random.default_rng(batch).standard_normal(y.shape).astype(np.float32))
        steps.append(grads)
    for grads in steps:  # earlier results are not overwritten by later steps
        assert grads["transposed"].dtype == np.float32
        np.testing.assert_allclose(grads["transposed"], grads["col2im"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "weight_shape, input_hw, stride, padding, batch, transposed",
    [
        ((16, 8, 3, 3), (4, 4), (1, 1), (1, 1), 64, True),  # the digits model's conv2
        ((16, 16, 3, 3), (32, 32), (1, 1), (1, 1), 64, True),  # same channels: fewer values copied
        ((16, 6, 5, 5), (14, 14), (1, 1), (0, 0), 64, False),  # LeNet-5's conv2: 5.2x the values
        ((32, 16, 3, 3), (16, 16), (1, 1), (1, 1), 64, False),  # twice the values, out of cache
        ((16, 16, 3, 3), (8, 8), (2, 2), (1, 1), 64, False),  # stride 2: no plain transposed conv
        ((16, 16, 1, 1), (8, 8), (1, 1), (0, 0), 64, False),  # 1x1: col2im is one add
        ((16, 16, 3, 3), (8, 8), (1, 1), (3, 3), 64, False),  # padding >= kernel
    ],
)
def test_input_gradient_route_rule(weight_shape, input_hw, stride, padding, batch, transposed):
    output_hw = tuple(output_size(n, k, s, p) for n, k, s, p in zip(input_hw, weight_shape[2:], stride, padding))
    assert conv_functional.transposed_route_pays(weight_shape, input_hw, output_hw, stride, padding, batch) is transposed


@pytest.mark.parametrize("c", CONFIGS[:4], ids=config_id)
def test_float32_is_preserved(c):
    check_float32(make_layer(c), (c["in_channels"], *c["hw"]), batch_size=c["batch"])


@pytest.mark.parametrize(
    "kernel, stride, padding, hw",
    [
        ((1, 1), (1, 1), (2, 2), (3, 3)),  # border outputs see only padding: they equal the bias
        ((3, 3), (4, 5), (0, 1), (9, 11)),  # stride > kernel: some inputs get no gradient
        ((5, 3), (1, 1), (0, 0), (5, 3)),  # kernel as large as the input: one output
        ((2, 4), (2, 1), (1, 2), (1, 1)),  # 1×1 input, the window is mostly padding
    ],
)
def test_edge_geometries(kernel, stride, padding, hw):
    c = dict(in_channels=2, out_channels=3, kernel=kernel, stride=stride, padding=padding, hw=hw,
             batch=2, bias=True)
    test_forward_matches_direct_definition(c)
    test_gradients(c)


def test_backward_matches_direct_definition_exactly_in_float32():
    """The fast path (fused bias row, CHWN layout) against finite-difference-free sums."""
    c = dict(in_channels=3, out_channels=4, kernel=(3, 2), stride=(2, 1), padding=(1, 1),
             hw=(7, 6), batch=3, bias=True)
    layer = built(c, np.float32)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 3, 7, 6)).astype(np.float32)
    y = layer.forward(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    grad_x = layer.backward(g)
    w = layer.params["weight"].data.astype(np.float64)
    # Gradients of sum(y * g) from the reference by linearity: unit perturbations are exact.
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    np.testing.assert_allclose(layer.params["bias"].grad, g64.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    grad_w = np.zeros_like(w)
    for index in np.ndindex(w.shape):
        unit = np.zeros_like(w)
        unit[index] = 1
        grad_w[index] = np.sum(reference_conv(x64, unit, None, c["stride"], c["padding"]) * g64)
    np.testing.assert_allclose(layer.params["weight"].grad, grad_w, rtol=1e-4, atol=1e-4)
    expected_grad_x = np.zeros_like(x64)
    for index in np.ndindex(x.shape):
        unit = np.zeros_like(x64)
        unit[index] = 1
        expected_grad_x[index] = np.sum(reference_conv(unit, w, None, c["stride"], c["padding"]) * g64)
    np.testing.assert_allclose(grad_x, expected_grad_x, rtol=1e-4, atol=1e-4)
    assert grad_x.dtype == layer.params["weight"].grad.dtype == np.float32


def test_buffers_reused_across_steps_and_dtypes_give_fresh_results():
    c = dict(in_channels=2, out_channels=3, kernel=(3, 3), stride=(1, 2), padding=(2, 1),
             hw=(5, 6), batch=2, bias=True)
    layer = built(c, np.float32)
    rng = np.random.default_rng(7)
    outputs = []
    for _ in range(3):
        x = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
        y = layer.forward(x)
        layer.backward(np.ones_like(y))
        outputs.append((x, y))
    # Outputs are never workspace buffers: earlier results survive later steps.
    for x, y in outputs:
        expected = reference_conv(x.astype(np.float64), layer.params["weight"].data.astype(np.float64),
                                  layer.params["bias"].data.astype(np.float64), c["stride"], c["padding"])
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    layer.to(np.float64)
    x = rng.standard_normal((4, 2, 5, 6))  # new batch size and dtype
    expected = reference_conv(x, layer.params["weight"].data, layer.params["bias"].data, c["stride"], c["padding"])
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["nchw", "chwn-view", "strided"])
def test_any_input_memory_layout(layout):
    c = dict(in_channels=3, out_channels=2, kernel=(2, 3), stride=(1, 1), padding=(1, 0),
             hw=(5, 7), batch=4, bias=True)
    layer = built(c)
    base = np.random.default_rng(8).standard_normal((4, 3, 10, 7))
    x = np.ascontiguousarray(base[:, :, :5])
    if layout == "chwn-view":
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    elif layout == "strided":
        x = base[:, :, ::2]
    expected = reference_conv(np.array(x), layer.params["weight"].data, layer.params["bias"].data,
                              c["stride"], c["padding"])
    snapshot = x.copy()
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(x, snapshot)


def test_outputs_chain_into_the_next_layer_without_copies():
    layer = built(dict(in_channels=1, out_channels=4, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
                       hw=(6, 6), batch=5, bias=True))
    y = layer.forward(np.ones((5, 1, 6, 6)))
    assert np.shares_memory(to_chwn(y), y)
    grad_x = layer.backward(np.ones_like(y))
    assert np.shares_memory(to_chwn(grad_x), grad_x)


@pytest.mark.parametrize("seed", range(6))
def test_col2im_is_the_adjoint_of_im2col(seed):
    c = random_config(100 + seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c["in_channels"], *c["hw"], c["batch"]))
    col = im2col(x, c["kernel"], c["stride"], c["padding"])
    cotangent = rng.standard_normal(col.shape)
    back = col2im(cotangent, c["hw"], c["stride"], c["padding"])
    assert np.isclose(np.sum(col * cotangent), np.sum(x * back))


def test_workspace_reallocates_on_new_shape_or_dtype():
    workspace = Workspace()
    a = workspace.get("col", (2, 3), np.float32, fill=0)
    assert workspace.get("col", (2, 3), np.float32) is a
    assert workspace.get("col", (3, 2), np.float32) is not a
    assert workspace.get("col", (3, 2), np.float64).dtype == np.float64


def test_parameters_shapes_and_pytorch_initialisation():
    layer = Conv2D(32, (3, 5))
    assert layer.build((4, 9, 9), np.random.default_rng(0)) == (32, 7, 5)
    weight, bias = layer.params["weight"].data, layer.params["bias"].data
    assert weight.shape == (32, 4, 3, 5) and bias.shape == (32,)
    assert weight.dtype == bias.dtype == np.float32
    limit = 1 / np.sqrt(4 * 3 * 5)  # torch.nn.Conv2d's default: U(±1/sqrt(fan_in)), bias too
    assert np.abs(bias).max() <= limit and np.abs(weight).max() <= limit
    assert abs(weight.std() - limit / np.sqrt(3)) < 0.01
    same = Conv2D(32, (3, 5))
    same.build((4, 9, 9), np.random.default_rng(0))
    np.testing.assert_array_equal(same.params["weight"].data, weight)
    no_bias = Conv2D(2, 1, bias=False)
    no_bias.build((1, 2, 2), np.random.default_rng(0))
    assert list(no_bias.params) == ["weight"]


def test_output_shape_rule_matches_pytorch():
    # PyTorch: floor((H + 2p - k) / s) + 1
    assert output_size(28, 5, 1, 2) == 28
    assert output_size(7, 3, 2, 0) == 3
    assert output_size(8, 3, 3, 1) == 3
    layer = Conv2D(5, (3, 2), stride=(2, 3), padding=(1, 0))
    assert layer.build((2, 8, 9), np.random.default_rng(0)) == (5, 4, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(out_channels=6, kernel_size=5, stride=1, padding=2, bias=True, init="kaiming_uniform"),
        dict(out_channels=3, kernel_size=[3, 5], stride=[2, 1], padding=[0, 1], bias=False, init="he_normal"),
    ],
)
def test_get_config_round_trips(kwargs):
    assert Conv2D(**kwargs).get_config() == kwargs
    assert Conv2D(**Conv2D(**kwargs).get_config()).get_config() == kwargs


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(out_channels=0, kernel_size=3), "out_channels"),
        (dict(out_channels=True, kernel_size=3), "out_channels"),
        (dict(out_channels=4, kernel_size=0), "kernel_size"),
        (dict(out_channels=4, kernel_size=(3, 3, 3)), "kernel_size"),
        (dict(out_channels=4, kernel_size="3"), "kernel_size"),
        (dict(out_channels=4, kernel_size=3, stride=0), "stride"),
        (dict(out_channels=4, kernel_size=3, padding=-1), "padding"),
        (dict(out_channels=4, kernel_size=3, bias="yes"), "bias"),
    ],
)
def test_bad_config_values(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Conv2D(**kwargs)


@pytest.mark.parametrize(
    "input_shape, kernel, padding",
    [
        ((3, 4), 3, 0),  # not (C, H, W)
        ((1, 2, 3, 4), 3, 0),
        ((1, 4, 4), 5, 0),  # kernel larger than the input
        ((1, 4, 2), (3, 5), (0, 1)),  # still too wide after padding
    ],
)
def test_shape_errors_name_both_shapes(input_shape, kernel, padding):
    layer = Conv2D(2, kernel, padding=padding)
    with pytest.raises(ShapeError) as info:
        layer.build(input_shape, np.random.default_rng(0))
    message = str(info.value)
    assert str(input_shape) in message and str(layer.kernel_size) in message


def test_kernel_that_fits_only_with_padding_is_accepted():
    layer = Conv2D(2, 5, padding=1)
    assert layer.build((1, 3, 3), np.random.default_rng(0)) == (2, 1, 1)


def test_a_workspace_keeps_training_buffers_through_an_evaluation_of_other_sizes():
    """Grad mode shared the three shapes kept per role: an epoch's full and last training
    batches plus two evaluation sizes evicted each other, and every epoch re-allocated and
    re-filled the multi-megabyte column buffers."""
    from cnnx.engine.functional.im2col import Workspace
    from cnnx.engine.grad_mode import no_grad

    workspace = Workspace()
    full, last = (workspace.get("col", (10, n), np.float32, fill=0) for n in (64, 16))
    with no_grad():
        for n in (256, 40, 8):
            workspace.get("col", (10, n), np.float32, fill=0)
    assert workspace.get("col", (10, 64), np.float32, fill=0) is full
    assert workspace.get("col", (10, 16), np.float32, fill=0) is last
