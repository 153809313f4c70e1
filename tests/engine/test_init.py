import numpy as np
import pytest

from cnnx.engine.init import glorot_uniform, he_normal
from cnnx.errors import ShapeError


def test_he_normal_has_the_he_standard_deviation():
    w = he_normal(np.random.default_rng(0), (200, 500), 500, np.float32)
    assert w.shape == (200, 500) and w.dtype == np.float32
    assert abs(w.mean()) < 0.003
    assert w.std() == pytest.approx(np.sqrt(2 / 500), rel=0.02)


def test_glorot_uniform_stays_within_its_limit():
    w = glorot_uniform(np.random.default_rng(0), (300, 100), 100, 300, np.float64)
    limit = np.sqrt(6 / 400)
    assert w.dtype == np.float64 and np.all(np.abs(w) <= limit)
    assert w.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)


@pytest.mark.parametrize("init", ["he", "glorot"])
def test_initialisers_are_reproducible_and_dtype_independent(init):
    def draw(seed, dtype):
        rng = np.random.default_rng(seed)
        if init == "he":
            return he_normal(rng, (4, 3, 2, 2), 12, dtype)
        return glorot_uniform(rng, (4, 3, 2, 2), 12, 16, dtype)

    assert np.array_equal(draw(1, np.float32), draw(1, np.float32))
    assert not np.array_equal(draw(1, np.float32), draw(2, np.float32))
    # float32 weights are the rounded float64 ones, so grad checks see the same network.
    assert np.array_equal(draw(1, np.float64).astype(np.float32), draw(1, np.float32))


def test_empty_fan_is_a_shape_error():
    with pytest.raises(ShapeError, match="fan_in=0"):
        he_normal(np.random.default_rng(0), (3, 0), 0)
    with pytest.raises(ShapeError, match="fan_out=0"):
        glorot_uniform(np.random.default_rng(0), (0, 3), 3, 0)
