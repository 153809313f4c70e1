"""A user's own images from a NumPy ``.npz`` archive.

Accepted layouts:

- ``x`` (N, C, H, W) or (N, H, W) and ``y`` (N,): split here, stratified, with ``seed``;
- ``x_train``/``y_train``/``x_test``/``y_test`` (optionally ``x_val``/``y_val``): the file's
  own split is kept; without a val split one is carved from train (``val_fraction`` of it).

An optional ``classes`` string array names the classes. The file is read with
``allow_pickle=False``: an archive can't execute code, so object arrays are refused.
"""

from __future__ import annotations

import zipfile
from os import PathLike
from pathlib import Path

import numpy as np

from cnnx.data.normalize import check_mode, normalize_splits
from cnnx.data.splits import DataSplits, Split, check_split_config, stratified_split
from cnnx.data.validation import check_dataset
from cnnx.errors import DataError
from cnnx.npz_load_failure import load_failure, one_line

PRESPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError)


def load_npz(
    path: str | PathLike[str],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    normalize: str = "none",
) -> DataSplits:
    owner = "dataset npz"
    check_split_config(owner, val_fraction, test_fraction, seed)
    check_mode(normalize, owner)
    path = Path(path).expanduser()
    # Absolute in messages: Hydra runs may change the working directory.
    source = f"npz file '{path.resolve()}'"
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "not found"
        raise DataError(f"{source}: {problem}")
    try:
        archive = np.load(path, allow_pickle=False)
    except READ_ERRORS as exc:
        raise DataError(f"{source}: not a readable .npz archive ({load_failure(path, exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{source}: holds a single array (.npy format); expected an .npz archive with "
            f"arrays 'x' and 'y' (np.savez(path, x=images, y=labels))"
        )
    with archive:
        keys = set(archive.files)
        if set(PRESPLIT_KEYS) <= keys:
            train, val, test = _presplit(archive, keys, source, val_fraction, seed)
        elif {"x", "y"} <= keys:
            x, y = _read_pair(archive, "x", "y", source)
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
        classes = _classes(archive, keys, source, [train[1], val[1], test[1]])

    shapes = {
        name: s[0].shape[1:]
        for name, s in zip(("train", "val", "test"), (train, val, test), strict=True)
        if len(s[0])
    }
    if len(set(shapes.values())) > 1:
        raise DataError(f"{source}: splits have different image shapes {shapes}")
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
            raise DataError(
                f"{source}: array {key!r} is stored as Python objects, which need pickle "
                f"(disabled: loading it could run code); save numeric arrays instead"
            ) from None
        raise DataError(f"{source}: array {key!r} is unreadable ({one_line(exc)})") from None
    except READ_ERRORS as exc:
        raise DataError(f"{source}: array {key!r} is unreadable ({one_line(exc)})") from None


def _read_pair(archive, x_key: str, y_key: str, source: str, min_classes: int = 2) -> Split:
    x = _read(archive, x_key, source)
    y = _read(archive, y_key, source)
    if x.ndim == 3:
        x = x[:, None]  # grayscale (N, H, W): add the channel axis
    elif x.ndim != 4:
        raise DataError(
            f"{source}: array {x_key!r} has shape {x.shape}; expected (N, C, H, W) or (N, H, W)"
        )
    return check_dataset(x, y, f"{source} ({x_key!r}, {y_key!r})", min_classes=min_classes)


def _presplit(archive, keys, source, val_fraction, seed) -> tuple[Split, Split, Split]:
    test = _read_pair(archive, "x_test", "y_test", source, min_classes=1)
    if {"x_val", "y_val"} <= keys:
        train = _read_pair(archive, "x_train", "y_train", source)
        val = _read_pair(archive, "x_val", "y_val", source, min_classes=1)
    else:
        x, y = _read_pair(archive, "x_train", "y_train", source)
        train, val, _ = stratified_split(x, y, val_fraction, 0.0, seed, source)
    return train, val, test


def _classes(archive, keys, source: str, labels: list[np.ndarray]) -> list[str]:
    count = 1 + max(int(y.max()) for y in labels if len(y))
    if "classes" not in keys:
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
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
