"""random_shift translates images, by every offset in [-max_shift, max_shift], zero-filled."""

import numpy as np

from cnnx.training.augment import random_shift


def translated(image, dy, dx):
    """``image`` (C, H, W) moved down by dy and right by dx, zeros where nothing moved in."""
    out = np.zeros_like(image)
    _, h, w = image.shape
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_every_offset_occurs_and_each_image_is_only_moved():
    shift, n = 2, 1000
    rng = np.random.default_rng(0)
    # Distinct non-zero pixels, so exactly one offset explains each output and a zero can only be fill.
    x = (rng.permutation(n * 2 * 5 * 5) + 1).reshape(n, 2, 5, 5).astype(np.float32)
    out = random_shift(x, shift, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    offsets = range(-shift, shift + 1)
    seen = set()
    for image, moved in zip(x, out, strict=True):
        matches = [(dy, dx) for dy in offsets for dx in offsets if np.array_equal(moved, translated(image, dy, dx))]
        assert len(matches) == 1, f"not a translation of its input within ±{shift}: {matches}"
        seen.add(matches[0])
    assert seen == {(dy, dx) for dy in offsets for dx in offsets}


def test_no_shift_returns_the_batch_untouched():
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    assert random_shift(x, 0, np.random.default_rng(0)) is x
