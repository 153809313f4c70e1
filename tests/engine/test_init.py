import numpy as np
import pytest

import cnnx
from cnnx.engine.init import INITIALIZERS, glorot_uniform, he_normal, kaiming_uniform
from cnnx.errors import ConfigError, ShapeError


def test_he_normal_has_the_he_standard_deviation():
    w = he_normal(np.random.default_rng(0), (200, 500), 500, dtype=np.float32)
    assert w.shape == (200, 500) and w.dtype == np.float32
    assert abs(w.mean()) < 0.003
    assert w.std() == pytest.approx(np.sqrt(2 / 500), rel=0.02)


def test_glorot_uniform_stays_within_its_limit():
    w = glorot_uniform(np.random.default_rng(0), (300, 100), 100, 300, dtype=np.float64)
    limit = np.sqrt(6 / 400)
    assert w.dtype == np.float64 and np.all(np.abs(w) <= limit)
    assert w.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)


@pytest.mark.parametrize("init", sorted(INITIALIZERS))
def test_initialisers_are_reproducible_and_dtype_independent(init):
    def draw(seed, dtype):
        return INITIALIZERS[init](np.random.default_rng(seed), (4, 3, 2, 2), 12, 16, dtype=dtype)

    assert np.array_equal(draw(1, np.float32), draw(1, np.float32))
    assert not np.array_equal(draw(1, np.float32), draw(2, np.float32))
    # float32 weights are the rounded float64 ones, so grad checks see the same network.
    assert np.array_equal(draw(1, np.float64).astype(np.float32), draw(1, np.float32))


def test_empty_fan_is_a_shape_error():
    with pytest.raises(ShapeError, match="fan_in=0"):
        kaiming_uniform(np.random.default_rng(0), (3, 0), 0)
    with pytest.raises(ShapeError, match="fan_out=0"):
        glorot_uniform(np.random.default_rng(0), (0, 3), 3, 0)


def test_kaiming_uniform_default_is_pytorchs_conv_and_linear_init():
    # torch.nn.Linear/Conv2d: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w = kaiming_uniform(np.random.default_rng(0), (300, 400), 400, dtype=np.float64)
    limit = 1 / np.sqrt(400)
    assert np.all(np.abs(w) <= limit) and np.abs(w).max() > 0.99 * limit
    assert w.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)
    # a=0 is He-uniform: U(±sqrt(6 / fan_in))
    he = kaiming_uniform(np.random.default_rng(0), (300, 400), 400, dtype=np.float64, a=0.0)
    assert np.abs(he).max() == pytest.approx(np.sqrt(6 / 400), rel=0.01)


@pytest.mark.parametrize("layer", [{"type": "conv2d", "out_channels": 4, "kernel_size": 3},
                                   {"type": "dense", "out_features": 4}])
def test_layers_take_an_init_name_and_pytorch_biases(layer):
    def build(**extra):
        spec = {"l": {**layer, **extra}} if layer["type"] == "conv2d" else \
            {"f": {"type": "flatten"}, "l": {**layer, **extra}}
        return cnnx.build_model(spec, (2, 5, 5), seed=0).state_dict()

    default = build()
    fan_in = 2 * 9 if layer["type"] == "conv2d" else 50
    assert np.abs(default["l.bias"]).max() <= 1 / np.sqrt(fan_in) and np.any(default["l.bias"] != 0)
    assert np.abs(default["l.weight"]).max() <= 1 / np.sqrt(fan_in)
    he = build(init="he_normal")
    assert np.all(he["l.bias"] == 0) and not np.array_equal(he["l.weight"], default["l.weight"])
    with pytest.raises(ConfigError, match="init='xavier'.*accepted: kaiming_uniform, he_normal, glorot_uniform"):
        build(init="xavier")
