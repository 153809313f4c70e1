"""A user's own images from a NumPy ``.npz`` archive.

Accepted layouts:

- ``x`` (N, C, H, W) or (N, H, W) and ``y`` (N,): split here, stratified, with ``seed``;
- ``x_train``/``y_train``/``x_test``/``y_test`` (optionally ``x_val``/``y_val``): the file's
  own split is kept; without a val split one is carved from train (``val_fraction`` of it).

Labels are class indices 0..K-1. An optional ``classes`` string array names the classes
(``classes[i]`` is label i's name); without it they are named by their numbers. Labels that
leave a class without any sample (1-based labels, a subset such as {3, 7}) or string labels
are refused, with the remapping that fixes them (``np.unique(y, return_inverse=True)``): they
would train a model with outputs for classes that do not exist. The file is read with
``allow_pickle=False``: an archive can't execute code, so object arrays are refused.

``layout: nhwc`` takes images saved channels-last (N, H, W, C), as TensorFlow, PIL and most
image tools hold them, and transposes them; ``nchw`` takes them as they are. With the default
``auto`` an array whose last axis looks like channels (1, 3 or 4) while its second is larger
than 4 is refused, naming both settings: read as NCHW it would train, silently, on H channels
of W×C-pixel images, and only the user knows whether (60, 16, 4, 4) holds 16-channel maps.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from cnnx.cli import warn
from cnnx.data.normalize import check_mode, normalize_splits, other_scale
from cnnx.data.splits import DataSplits, Split, check_split_config, listed, stratified_split
from cnnx.data.validation import check_dataset
from cnnx.errors import ConfigError, DataError, flat_message
from cnnx.npz_load_failure import NPZ_READ_ERRORS, load_failure

PRESPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
LAYOUTS = ("auto", "nchw", "nhwc")
#: Channel counts of channels-last images: 1 (grey), 3 (RGB), 4 (RGBA). An (N, A, B, C) array
#: with C among them and A above them reads as NCHW only as A channels of B×C-pixel strips.
_CHANNELS = (1, 3, 4)
#: How labels of any values become 0..K-1 with their names kept, as the loader reads them.
_REMAP = "names, y = np.unique(y, return_inverse=True), then save y=y and classes=names.astype(str)"


def load_npz(
    path: str | PathLike[str],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    normalize: str = "none",
    layout: str = "auto",
) -> DataSplits:
    owner = "dataset npz"
    check_split_config(owner, val_fraction, test_fraction, seed)
    check_mode(normalize, owner)
    if layout not in LAYOUTS:
        raise ConfigError(f"{owner}: layout={layout!r} is not known; accepted: {', '.join(LAYOUTS)}")
    path = Path(path).expanduser()
    # Absolute in messages: Hydra runs may change the working directory.
    source = f"npz file '{path.resolve()}'"
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "not found"
        raise DataError(f"{source}: {problem}")
    try:
        archive = np.load(path, allow_pickle=False)
    except NPZ_READ_ERRORS as exc:
        raise DataError(f"{source}: not a readable .npz archive ({load_failure(path, exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{source}: holds a single array (.npy format); expected an .npz archive with "
            f"arrays 'x' and 'y' (np.savez(path, x=images, y=labels))"
        )
    read = _Reader(archive, source, layout)
    with archive:
        keys = set(archive.files)
        presplit = set(PRESPLIT_KEYS) <= keys
        if presplit:
            train, val, test = _presplit(read, keys, val_fraction, seed)
        elif {"x", "y"} <= keys:
            x, y = read.pair("x", "y")
            train, val, test = stratified_split(x, y, val_fraction, test_fraction, seed, source)
        else:
            missing = [k for k in ("x", "y") if k not in keys]
            found = ", ".join(repr(k) for k in sorted(keys)) or "no arrays"
            raise DataError(
                f"{source}: missing array{'s' if len(missing) > 1 else ''} "
                f"{' and '.join(repr(k) for k in missing)}; found "
                f"{found}; expected 'x' (N, C, H, W) or (N, H, W) and 'y' (N,) integer labels "
                f"(or x_train, y_train, x_test, y_test)"
            )
        classes = _classes(archive, keys, source, [train[1], val[1], test[1]], presplit)

    shapes = {
        name: s[0].shape[1:]
        for name, s in zip(("train", "val", "test"), (train, val, test), strict=True)
        if len(s[0])
    }
    if len(set(shapes.values())) > 1:
        raise DataError(f"{source}: splits have different image shapes {shapes}")
    train_key = "x_train" if presplit else "x"
    trained = float(train[0].min()), float(train[0].max())
    if normalize == "none" and _unscaled(read.dtypes[train_key], *trained):
        # Trained on 0–255 as they are, a network's first steps saturate: often it never learns.
        warn(f"{source}: {train_key} holds {read.dtypes[train_key]} pixels (up to {trained[1]:g}), used as "
             f"they are with dataset.normalize=none; set dataset.normalize=unit to scale them to [0, 1] "
             f"(or standard)")
    # The file's own held-out splits, exported by another pipeline, may be on another scale:
    # fitted to x_train's, normalisation would not bring them to it, and their scores mean little.
    held_out = {"x_val": val[0], "x_test": test[0]} if presplit else {}
    for key, x in held_out.items():
        if key in read.dtypes and len(x):
            seen = float(x.min()), float(x.max())
            if other_scale(trained, seen):
                warn(f"{source}: {key} spans [{seen[0]:.4g}, {seen[1]:.4g}], but {train_key} spans "
                     f"[{trained[0]:.4g}, {trained[1]:.4g}]; a split on another scale than training is scored "
                     f"on inputs the model never saw: save every split on the same scale")
    normalization = normalize_splits((train, val, test), normalize, owner)
    return DataSplits(
        train=train,
        val=val,
        test=test,
        classes=classes,
        input_shape=train[0].shape[1:],
        name=f"npz:{path.name}",
        normalization=normalization,
    )


def _read(archive, key: str, source: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "pickle" in str(exc):
            # A list of Python strings saved as is becomes an object array.
            instead = "save it as strings: classes=np.array(names).astype(str)" if key == "classes" else \
                "save numeric arrays instead"
            raise DataError(
                f"{source}: array {key!r} is stored as Python objects, which need pickle "
                f"(disabled: loading it could run code); {instead}"
            ) from None
        raise DataError(f"{source}: array {key!r} is unreadable ({flat_message(exc)})") from None
    except NPZ_READ_ERRORS as exc:
        raise DataError(f"{source}: array {key!r} is unreadable ({flat_message(exc)})") from None


class _Reader:
    """Reads (x, y) pairs of one archive in its layout, noting each x array's dtype as saved."""

    def __init__(self, archive, source: str, layout: str):
        self.archive, self.source, self.layout = archive, source, layout
        self.dtypes: dict[str, np.dtype] = {}

    def pair(self, x_key: str, y_key: str, min_classes: int = 2) -> Split:
        x = _read(self.archive, x_key, self.source)
        y = _read(self.archive, y_key, self.source)
        if y.dtype.kind in "US" and y.size:
            raise DataError(f"{self.source}: array {y_key!r} holds strings such as {str(y.flat[0])!r}; expected "
                            f"integer class indices 0..K-1: {_REMAP}")
        if x.ndim == 3:
            x = x[:, None]  # grayscale (N, H, W): add the channel axis
        elif x.ndim != 4:
            raise DataError(
                f"{self.source}: array {x_key!r} has shape {x.shape}; expected (N, C, H, W) or (N, H, W)"
            )
        elif self.layout == "nhwc":
            x = x.transpose(0, 3, 1, 2)
        elif self.layout == "auto" and x.shape[3] in _CHANNELS and x.shape[1] > max(_CHANNELS):
            raise DataError(
                f"{self.source}: array {x_key!r} has shape {x.shape}, which looks channels-last (N, H, W, C) "
                f"with {x.shape[3]} channel{'s' if x.shape[3] != 1 else ''}; cnnx reads (N, C, H, W): set "
                f"dataset.layout=nhwc to transpose it, or dataset.layout=nchw if it holds {x.shape[1]} "
                f"channels of {x.shape[2]}×{x.shape[3]} pixels"
            )
        self.dtypes[x_key] = x.dtype
        return check_dataset(x, y, f"{self.source} ({x_key!r}, {y_key!r})", min_classes=min_classes)


def _unscaled(dtype: np.dtype, low: float, high: float) -> bool:
    """Whether pixels saved as ``dtype`` spanning [low, high] look like 0–255 (or 0–16, …)
    rather than [0, 1]: integers beyond 1, or non-negative floats reaching 2 (resampling a
    [0, 1] image overshoots 1 a little, never that far)."""
    if dtype.kind in "iu":
        return high > 1
    return dtype.kind == "f" and low >= 0 and high >= 2


def _presplit(read: _Reader, keys, val_fraction, seed) -> tuple[Split, Split, Split]:
    test = read.pair("x_test", "y_test", min_classes=1)
    if {"x_val", "y_val"} <= keys:
        train = read.pair("x_train", "y_train")
        val = read.pair("x_val", "y_val", min_classes=1)
    else:
        x, y = read.pair("x_train", "y_train")
        train, val, _ = stratified_split(x, y, val_fraction, 0.0, seed, read.source)
    return train, val, test


def _classes(archive, keys, source: str, labels: list[np.ndarray], presplit: bool) -> list[str]:
    count = 1 + max(int(y.max()) for y in labels if len(y))
    if "classes" not in keys:
        found = np.unique(np.concatenate(labels))
        if len(found) < count:
            empty = np.setdiff1d(np.arange(count), found)
            where = " (over every split's labels at once)" if presplit else ""
            raise DataError(
                f"{source}: labels are {_runs(found)}, which leaves class{'es' if len(empty) > 1 else ''} "
                f"{_runs(empty)} without a sample; labels must be 0..K-1: {_REMAP}{where}"
            )
        return [str(i) for i in range(count)]
    names = _read(archive, "classes", source)
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(
            f"{source}: array 'classes' has shape {names.shape} and dtype {names.dtype}; "
            f"expected a 1-D string array"
        )
    if len(names) < count:
        raise DataError(
            f"{source}: array 'classes' names {len(names)} classes but labels go up to {count - 1}"
        )
    named = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    twice = sorted({name for name in named if named.count(name) > 1})
    if twice:
        # Two outputs under one name: counts, predictions and accuracy would merge them.
        raise DataError(f"{source}: array 'classes' names {', '.join(map(repr, twice))} more than once; "
                        f"expected one distinct name per class")
    return named


def _runs(values: np.ndarray) -> str:
    """Sorted integers as ``1..10`` or ``0..8, 11``: labels are read as ranges."""
    runs = np.split(values, np.flatnonzero(np.diff(values) != 1) + 1)
    parts = [f"{run[0]}..{run[-1]}" if len(run) > 2 else str(value) for run in runs
             for value in (run[:1] if len(run) > 2 else run)]
    return listed(parts, total=len(values))
