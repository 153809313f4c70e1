"""random_shift translates images, by every offset in [-max_shift, max_shift], the uncovered
border filled with what a black pixel becomes once normalised."""

import numpy as np

from cnnx.training.augment import black_border, random_shift


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


def test_the_uncovered_border_is_black_in_the_normalised_scale_per_channel():
    """It was normalised 0, the training mean: grey bands no validation or test image has."""
    normalization = {"mode": "standard", "shift": [0.3, 10.0], "scale": [0.5, 2.0]}
    fill = black_border(normalization)
    np.testing.assert_allclose(fill, [-0.6, -5.0])
    x = np.ones((200, 2, 4, 4), np.float32)
    out = random_shift(x, 1, np.random.default_rng(0), fill)
    assert out.dtype == np.float32
    for channel, value in enumerate(fill):
        assert set(np.unique(out[:, channel])) == {np.float32(value), np.float32(1.0)}
    assert black_border({"mode": "none"}).tolist() == [0.0]


def test_a_run_with_shifts_fills_with_its_black():
    from cnnx.data.splits import DataSplits
    from tests.tiny_trainer import make_trainer, tiny_data

    data = tiny_data()
    data = DataSplits(train=data.train, val=data.val, test=data.test, classes=data.classes,
                      input_shape=data.input_shape, name="t",
                      normalization={"mode": "unit", "shift": [-2.0], "scale": [4.0]})
    trainer = make_trainer(epochs=1, max_shift=2)
    seen = []
    forward = trainer.model.forward
    trainer.model.forward = lambda x, training=None: seen.append(x.copy()) or forward(x, training)
    trainer.fit(data)
    batches = np.concatenate(seen)
    assert (batches == np.float32(0.5)).sum() > 0  # (0 - -2) / 4
