"""What every dataset loader returns, and the stratified train/val/test split they share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np

from cnnx.cli import warn
from cnnx.data.normalize import raw_range
from cnnx.engine.options import check_range
from cnnx.errors import ConfigError, DataError, DataSplitsError, flat_message

Split = tuple[np.ndarray, np.ndarray]
#: More classes than this are summed up by the smallest and largest in the run's data line.
_CLASSES_LISTED = 10


@dataclass
class DataSplits:
    """Train/val/test ``(x, y)`` pairs: ``x`` float32 (N, C, H, W), ``y`` int64 (N,).

    ``val`` or ``test`` hold zero samples when their fraction is 0. ``normalization`` records
    the per-channel transform already applied, ``x = (raw - shift) / scale``, with shift and
    scale fitted on the training split only, so inference code can apply the same to new
    images (plain lists: loggable as JSON). Its ``input_range`` is the training pixels'
    [min, max] in the loader's scale, so that images sent in another scale later (raw 0–16
    digits to a model trained on [0, 1]) are recognised; a loader that normalised without
    ``fit_normalization`` gets it filled in here, from its normalised training images.

    ``preparation`` (None for arrays) says how a loader that reads image files turns one into
    an image of ``x`` (``cnnx.data.image_files.preparation``), so prediction can do the same.

    ``skipped`` lists what the loader found but did not use, each entry ``"name: why"``
    (``"cat/notes.txt: not a .png/.jpg/… file"``), so that a run can say so rather than
    train on fewer images than the user thinks.
    """

    train: Split
    val: Split
    test: Split
    classes: list[str]
    input_shape: tuple[int, int, int]
    name: str
    normalization: dict[str, Any] = field(default_factory=lambda: {"mode": "none"})
    skipped: list[str] = field(default_factory=list)
    preparation: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        # Names, whatever a loader hands in (np.unique(y) gives NumPy integers): they are
        # written to JSON with every checkpoint and model, and shown as text.
        self.classes = [str(name) for name in self.classes]
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if not (isinstance(split, (tuple, list)) and len(split) == 2
                    and all(isinstance(part, np.ndarray) for part in split)):
                raise DataSplitsError(self.name, f"returned a {split_name} split of {_kinds(split)}; expected a "
                                                 f"pair (x, y) of NumPy arrays")
            x, y = split
            if x.shape[1:] != self.input_shape:
                dims = ", ".join(map(str, self.input_shape))
                raise DataSplitsError(self.name, f"declares input_shape {self.input_shape}, but its {split_name} "
                                                 f"split holds images shaped {x.shape[1:]}; expected each "
                                                 f"split's x shaped (N, {dims})")
            if len(x) != len(y):
                raise DataSplitsError(self.name, f"returned a {split_name} split of {len(x)} images and "
                                                 f"{len(y)} labels; expected one label per image")
        x_train = self.train[0]
        # Images that break the contract (no channel axis, NaN pixels) are named by
        # check_loaded, before training; they get no range here.
        if "input_range" not in self.normalization and x_train.ndim == 4 and x_train.size \
                and x_train.dtype.kind in "fiu":
            low, high = raw_range(x_train, self.normalization)
            if math.isfinite(low) and math.isfinite(high):
                self.normalization = {**self.normalization, "input_range": [low, high]}

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train[1]), "val": len(self.val[1]), "test": len(self.test[1])}

    def class_counts(self) -> dict[str, int]:
        """Samples of each class over all three splits."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for _, y in (self.train, self.val, self.test):
            counts += np.bincount(y, minlength=self.num_classes)[:self.num_classes]
        return dict(zip(self.classes, (int(c) for c in counts), strict=True))

    def describe(self) -> str:
        """What a run trains on, in one line: ``data: imagefolder:pets: 2 classes, 40 images
        (train 28, val 6, test 6); per class: cat 20, dog 20``, and what was skipped."""
        sizes = self.sizes()
        counts = self.class_counts()
        if len(counts) <= _CLASSES_LISTED:
            per_class = ", ".join(f"{name} {n}" for name, n in counts.items())
        else:
            # "name: count": class names are often numbers, and "0 (10)" read as class 0's count.
            fewest, most = min(counts, key=counts.get), max(counts, key=counts.get)
            per_class = f"fewest class {fewest}: {counts[fewest]}, most class {most}: {counts[most]}"
        line = (f"data: {self.name}: {self.num_classes} classes, {sum(sizes.values())} images "
                f"({', '.join(f'{k} {v}' for k, v in sizes.items())}); per class: {per_class}")
        if self.skipped:
            count = len(self.skipped)
            line += f"; skipped {count} file{'s' if count != 1 else ''} (e.g. {self.skipped[0]})"
        return line

    def params(self) -> dict[str, str]:
        """The data's sizes as MLflow params (the config says what was asked for, these what
        was found)."""
        sizes = self.sizes()
        return {"data.num_classes": str(self.num_classes), **{f"data.{k}_size": str(v) for k, v in sizes.items()},
                "data.skipped_files": str(len(self.skipped))}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes().items())
        return (
            f"DataSplits(name={self.name!r}, {sizes}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def listed(names: Sequence[str], most: int = 6, total: int | None = None) -> str:
    """``a, b, c`` or, past ``most`` names, ``a, b, c, d, e, f, … (40 in all)``: one line.
    ``total`` counts what the names stand for where one name stands for several (``0..8``)."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, … ({total or len(names)} in all)"


def _kinds(split: Any) -> str:
    """``(list, list)`` for a pair of lists: what a loader returned instead of two arrays."""
    if isinstance(split, (tuple, list)):
        return f"{type(split).__name__} ({', '.join(type(part).__name__ for part in split)})"
    return type(split).__name__


def check_split_config(owner: str, val_fraction: Any, test_fraction: Any, seed: Any) -> None:
    """ConfigError unless 0 <= fractions < 1, their sum < 1 and seed is an int >= 0."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        check_range(owner, key, value, 0.0, 1.0, high_open=True)
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"{owner}: val_fraction={val_fraction!r} + test_fraction={test_fraction!r} "
            f"leaves no training data; accepted: val_fraction + test_fraction < 1"
        )
    check_seed(f"{owner}: seed", seed)


def check_seed(key: str, seed: Any) -> None:
    """ConfigError naming ``key`` unless ``seed`` is an int that sklearn's RandomState takes."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2**32:
        raise ConfigError(f"{key}={seed!r} is invalid; accepted: an integer 0 <= seed < 2**32")


def stratified_indices(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int, source: str = "dataset",
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, val, test) with every class in the same proportion in each split.

    Fractions are of the whole dataset; counts round up as in sklearn. Loaders that create
    their data (synthetic) split labels first and then generate each split in place.
    ``classes`` names the labels in the error about a class too small to split.
    """
    # Imported here: sklearn costs seconds of start-up, paid only when data is split.
    from sklearn.model_selection import train_test_split

    check_split_config(source, val_fraction, test_fraction, seed)
    n = len(y)
    n_test = math.ceil(test_fraction * n)
    n_val = math.ceil(val_fraction * n)
    if n - n_test - n_val < 1:
        raise DataError(
            f"{source}: {n} samples leave no training data after val_fraction={val_fraction} "
            f"and test_fraction={test_fraction}"
        )
    # One RandomState consumed by both calls: the val split depends on the seed too, but is
    # not a copy of the test split's shuffle.
    fractions = f"val_fraction={val_fraction} and test_fraction={test_fraction}"
    _one_per_class(n, len(np.unique(y)), {"val": (val_fraction, n_val), "test": (test_fraction, n_test)},
                   source, fractions)
    random_state = np.random.RandomState(seed)
    empty = np.empty(0, dtype=np.int64)
    index = np.arange(n)
    rest, test, train, val = index, empty, index, empty
    needed = _needed_per_class(n_test / n, n_val > 0)
    try:
        if n_test:
            _two_per_class(y, y, source, classes, fractions, needed)
            rest, test = train_test_split(index, test_size=n_test, stratify=y, random_state=random_state)
        if n_val:
            _two_per_class(y[rest], y, source, classes, fractions, needed)
            train, val = train_test_split(rest, test_size=n_val, stratify=y[rest], random_state=random_state)
        else:
            train = rest
    except DataError:
        raise
    except ValueError as exc:
        # sklearn refuses a held-out split smaller than the class count.
        raise DataError(
            f"{source}: cannot split {n} samples of {len(np.unique(y))} classes with "
            f"{fractions}: {flat_message(exc)}"
        ) from None
    return train, val, test


def _one_per_class(n: int, classes: int, held_out: dict[str, tuple[float, int]], source: str,
                   fractions: str) -> None:
    """A stratified split needs a sample of every class on both sides. sklearn says so as
    "The test_size = 2 should be greater or equal to the number of classes = 3" whichever
    split is short, the val split included: this names the split and its own fraction key."""
    short = {name: (fraction, size) for name, (fraction, size) in held_out.items() if 0 < size < classes}
    if short:
        given = " and ".join(f"a {name} split of {size} ({name}_fraction={fraction})"
                             for name, (fraction, size) in short.items())
        # The smallest fraction, in hundredths, whose split holds `classes` samples.
        least = math.ceil(100 * classes / n) / 100
        keys = " and ".join(f"{name}_fraction" for name in short)
        left = n - sum(math.ceil((least if name in short else fraction) * n)
                       for name, (fraction, _) in held_out.items())
        remedy = f"set {keys} to at least {least} or to 0" if left >= classes else f"set {keys} to 0, or add samples"
        raise DataError(
            f"{source}: {n} samples give {given}, fewer than the {classes} classes; a stratified split "
            f"needs a sample of each class: {remedy}"
        )
    train = n - sum(size for _, size in held_out.values())
    if train < classes:
        raise DataError(
            f"{source}: {fractions} leave {train} of {n} samples for the train split, fewer than the "
            f"{classes} classes; a stratified split needs a sample of each class: set the fractions lower"
        )


def _needed_per_class(test_share: float, val_split: bool) -> int:
    """The smallest class that any draw can split: each side of a stratified split needs one
    sample of it, and the val split is drawn from what the test split leaves, of which the
    test split takes at most ceil(share × count)."""
    needed = 2
    while val_split and needed - math.ceil(needed * test_share) < 2:
        needed += 1
    return needed


def _two_per_class(part: np.ndarray, y: np.ndarray, source: str, classes: Sequence[str] | None,
                   fractions: str, needed: int) -> None:
    """sklearn refuses to stratify ``part`` with a class of one sample and names it by label
    number ("Classes with too few members are: [2]"); this names it as the user does, with how
    many of ``y`` it has and how many it needs."""
    counts = np.bincount(part)
    small = [label for label in np.flatnonzero(counts) if counts[label] < 2]
    if not small:
        return
    label = int(small[0])
    name = repr(str(classes[label])) if classes is not None and label < len(classes) else str(label)
    have = int(np.count_nonzero(y == label))
    raise DataError(
        f"{source}: class {name} has {have} sample{'s' if have != 1 else ''}, too few to split with {fractions}; "
        f"each class needs at least {needed} (add samples to it, remove it, or set the fractions lower or to 0)"
    )


def stratified_split(
    x: np.ndarray,
    y: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    source: str = "dataset",
    classes: Sequence[str] | None = None,
) -> tuple[Split, Split, Split]:
    """``(train, val, test)`` pairs of ``(x, y)``, stratified by ``y`` (copies of the rows)."""
    train, val, test = stratified_indices(y, val_fraction, test_fraction, seed, source, classes)
    return (x[train], y[train]), (x[val], y[val]), (x[test], y[test])


def check_loaded(data: Any, label: str) -> DataSplits:
    """What the trainer relies on in a loader's result, checked before any model is built, so
    that a plugin's slip fails in one line naming ``label`` (``dataset 'x' (from my-pkg 1.0)``)
    rather than as a traceback or silent float64 arithmetic epochs later."""
    if not isinstance(data, DataSplits):
        raise DataError(
            f"{label} returned {type(data).__name__}; expected cnnx.data.splits.DataSplits "
            f"(train/val/test (x, y) pairs, classes, input_shape, name)"
        )
    shape = data.input_shape
    if len(shape) != 3 or min(shape) <= 0:
        raise DataError(f"{label} returned input_shape {shape}; expected (C, H, W) with positive sizes")
    if len(data.train[1]) == 0:
        raise DataError(f"{label} returned an empty train split")
    for split in ("train", "val", "test"):
        x, y = getattr(data, split)  # arrays: DataSplits refuses anything else when built
        if x.dtype != np.float32:
            raise DataError(
                f"{label} returned {split} images of dtype {x.dtype}; "
                f"expected float32 (N, C, H, W) (x.astype(np.float32))"
            )
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise DataError(
                f"{label} returned {split} labels of dtype {y.dtype} "
                f"and shape {y.shape}; expected integer class indices shaped (N,)"
            )
        if len(y) and (y.min() < 0 or y.max() >= data.num_classes):
            raise DataError(
                f"{label} returned {split} labels {y.min()}..{y.max()} for {data.num_classes} "
                f"classes {data.classes}; expected labels in [0, {data.num_classes})"
            )
    _check_classes_in_splits(data)
    return data


def _check_classes_in_splits(data: DataSplits) -> None:
    """Refuse a class the train split lacks, and warn of one a held-out split lacks: the data
    line sums the three splits, so it cannot show either. A class missing from training gets
    an output that learns nothing; one missing from val or test is never scored there (a class
    of 2 samples, which any draw can split, lands wholly in train)."""
    counts = {split: np.bincount(getattr(data, split)[1], minlength=data.num_classes)
              for split in ("train", "val", "test")}

    def names(missing: np.ndarray) -> str:
        return f"class{'es' if len(missing) > 1 else ''} {listed([repr(data.classes[i]) for i in missing])}"

    unseen = np.flatnonzero(counts["train"] == 0)
    if len(unseen):
        held = [f"{int(counts[split][unseen].sum())} in {split}" for split in ("val", "test")
                if counts[split][unseen].sum()]
        raise DataError(
            f"data {data.name}: the train split holds no samples of {names(unseen)} "
            f"({', '.join(held) if held else 'nor does val or test'}); a model cannot learn a class it never "
            f"trains on: add training samples of it, or leave it out and number the labels 0..K-1"
        )
    for split in ("val", "test"):
        missing = np.flatnonzero(counts[split] == 0)
        if counts[split].sum() and len(missing):
            them = "it" if len(missing) == 1 else "them"
            warn(f"data {data.name}: the {split} split holds no samples of {names(missing)} "
                 f"({int(counts['train'][missing].sum())} in train); the {split} metrics never see {them}: "
                 f"add samples of {them}")
