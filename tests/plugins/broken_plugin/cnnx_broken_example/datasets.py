"""Dataset loaders with the slips plugin authors make; ``**options`` takes any config keys."""

import numpy as np

from cnnx.data.splits import DataSplits


def _splits(x, y, input_shape=(1, 8, 8)):
    return DataSplits(train=(x[:12], y[:12]), val=(x[12:15], y[12:15]), test=(x[15:], y[15:]),
                      classes=["a", "b", "c"], input_shape=input_shape, name="broken")


def _arrays(image_shape=(1, 8, 8)):
    x = np.random.default_rng(0).standard_normal((18, *image_shape)).astype(np.float32)
    return x, np.arange(18) % 3


def tuple_data(**options):
    return _arrays()


def float64_images(**options):
    x, y = _arrays()
    return _splits(x.astype(np.float64), y)


def float_labels(**options):
    x, y = _arrays()
    return _splits(x, y.astype(np.float64))


def no_channel_axis(**options):
    x, y = _arrays((8, 8))
    return _splits(x, y, (8, 8))


def wrong_image_shape(**options):
    x, y = _arrays((1, 6, 6))
    return _splits(x, y, (1, 8, 8))


def fewer_labels(**options):
    x, y = _arrays()
    return DataSplits(train=(x[:12], y[:10]), val=(x[12:15], y[12:15]), test=(x[15:], y[15:]),
                      classes=["a", "b", "c"], input_shape=(1, 8, 8), name="broken")
