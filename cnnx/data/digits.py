"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes; no download)."""

from __future__ import annotations

from importlib import metadata
from numbers import Integral

from cnnx.data.cache import cached_splits
from cnnx.data.memory import check_fits_in_memory
from cnnx.data.normalize import check_mode, normalize_splits
from cnnx.data.resize import resize_bilinear
from cnnx.data.splits import DataSplits, check_split_config, stratified_split
from cnnx.data.validation import check_dataset
from cnnx.errors import ConfigError

OWNER = "dataset digits"
#: Images in scikit-learn's digits.
DIGITS = 1797
#: The digits' pixels are counts of set bits in 4×4 blocks of a 32×32 bitmap.
PIXEL_MAX = 16.0


def load_digits(
    size: int = 8,
    normalize: str = "standard",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DataSplits:
    """Digits as (N, 1, size, size) float32, stratified splits drawn with ``seed``.

    Pixels are scaled to [0, 1] by their known range (a constant, not a statistic), resized
    bilinearly, then normalised with training-split statistics: ``standard`` (mean 0, std 1),
    ``unit`` (min-max of the training pixels) or ``none`` (left in [0, 1]).
    """
    if isinstance(size, bool) or not isinstance(size, Integral) or size < 2:
        raise ConfigError(
            f"{OWNER}: size={size!r} is invalid; accepted: an integer >= 2 (8 = native)"
        )
    check_split_config(OWNER, val_fraction, test_fraction, seed)
    check_mode(normalize, OWNER)
    options = {"size": int(size), "normalize": normalize, "val_fraction": val_fraction,
               "test_fraction": test_fraction, "seed": seed, "scikit-learn": metadata.version("scikit-learn")}
    return cached_splits("digits", options, lambda: _prepare(int(size), normalize, val_fraction, test_fraction, seed))


def _prepare(size: int, normalize: str, val_fraction: float, test_fraction: float, seed: int) -> DataSplits:
    # The float64 resize, its float32 result and the splits copied from it, at the peak; asked
    # only when the cache does not hold the splits, which need a quarter of that.
    check_fits_in_memory(f"dataset.size={size}", DIGITS * size ** 2 * (8 + 4 + 4),
                         f"{DIGITS} digits at {size}×{size}")
    import sklearn.datasets  # seconds of import time: paid when the cache does not hold these splits

    bunch = sklearn.datasets.load_digits()
    images = bunch.images[:, None, :, :] / PIXEL_MAX
    images = resize_bilinear(images, size, size)
    x, y = check_dataset(images, bunch.target, "dataset 'digits'")

    train, val, test = stratified_split(x, y, val_fraction, test_fraction, seed, OWNER)
    normalization = normalize_splits((train, val, test), normalize, OWNER)
    return DataSplits(
        train=train,
        val=val,
        test=test,
        classes=[str(int(c)) for c in bunch.target_names],
        input_shape=(1, size, size),
        name="digits",
        normalization=normalization,
    )
