"""``imagefolder``: a folder with one sub-folder per class, each holding image files
(PNG, JPEG, BMP, TIFF, WebP, PPM/PGM).

    root/
      cat/ 001.png 002.jpg …
      dog/ …

Classes are the sub-folder names in sorted order (label 0 is the first). A class folder is
read recursively, as torchvision's ``ImageFolder`` and Keras' ``image_dataset_from_directory``
read it: images in its sub-folders belong to its class. So a root holding split folders
(``train/``, ``test/``, each with class folders) would train a classifier of splits: class
folders named like splits get a warning that says which folder to give. Every image is
decoded by ``cnnx.data.image_files.read_image`` (re-exported here): converted to grayscale or
RGB, resized to ``size`` (bilinear, with Pillow's antialiasing when shrinking) and scaled to
[0, 1] whatever its bit depth (8-bit / 255, 16-bit / 65535); the splits are stratified and
drawn with ``seed``; ``normalize`` is fitted on the training split only. Hidden entries are
ignored; other files (other extensions, or beside the class folders) are skipped and reported
in ``DataSplits.skipped``, which the run's data line counts; an image file Pillow cannot read
stops the run with its path.
"""

from __future__ import annotations

from numbers import Integral
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from cnnx.cli import warn
from cnnx.data.image_files import EXTENSIONS, check_color_mode, prepare_image, preparation, read_image
from cnnx.data.memory import check_fits_in_memory
from cnnx.data.normalize import check_mode, normalize_splits
from cnnx.data.splits import DataSplits, check_split_config, stratified_split
from cnnx.data.validation import check_dataset
from cnnx.errors import ConfigError, DataError
# Imported under another name: ``cache`` is also the option that switches it off.
from cnnx_imagefolder import cache as image_cache

__all__ = ["load_imagefolder", "read_image"]

OWNER = "dataset imagefolder"
#: Folder names of the ``root/train/<class>/…`` layout that datasets are often downloaded in.
SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "test", "testing")


def load_imagefolder(
    root: str | PathLike[str],
    size: int | list[int] = 32,
    color_mode: str = "grayscale",
    normalize: str = "standard",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache: bool = True,
    cache_dir: str | PathLike[str] | None = None,
) -> DataSplits:
    height, width = _size(size)
    check_color_mode(color_mode, OWNER)
    check_mode(normalize, OWNER)
    check_split_config(OWNER, val_fraction, test_fraction, seed)
    if not isinstance(cache, bool):
        raise ConfigError(f"{OWNER}: cache={cache!r} is invalid; accepted: true, false")

    # Recorded with the model, so that prediction reads new images through the same function.
    prepared = preparation((height, width), color_mode)
    root = Path(root).expanduser().resolve()
    classes, files, labels, skipped = _scan(root)
    channels = 1 if color_mode == "grayscale" else 3
    # The images, the splits copied from them and their normalisation, at the peak: about 3.5
    # times the array (measured), whether decoded or read from the cache; asked before either.
    check_fits_in_memory(f"dataset.size={size}", int(len(files) * channels * height * width * 4 * 3.5),
                         f"{len(files)} images at {height}×{width}")
    x = y = None
    store = None
    if cache:
        store = Path(cache_dir).expanduser() if cache_dir is not None else image_cache.default_cache_dir()
    if store is not None:
        key = image_cache.cache_key(root, files, prepared)
        cached = image_cache.load(store, key)
        if cached is not None and len(cached[1]) == len(files):
            x, y = cached
    if x is None:
        x = np.stack([prepare_image(path, prepared, OWNER) for path in files])
        y = np.asarray(labels, dtype=np.int64)
        if store is not None:
            image_cache.save(store, key, x, y)

    images, y = check_dataset(x, y, f"{OWNER} at '{root}'")
    train, val, test = stratified_split(images, y, val_fraction, test_fraction, seed, f"{OWNER} at '{root}'",
                                         classes)
    normalization = normalize_splits((train, val, test), normalize, OWNER)
    return DataSplits(
        train=train, val=val, test=test, classes=classes,
        input_shape=(images.shape[1], height, width),
        name=f"imagefolder:{root.name}", normalization=normalization, skipped=skipped,
        preparation=prepared,
    )


def _size(size: Any) -> tuple[int, int]:
    if isinstance(size, Integral) and not isinstance(size, bool):
        pair = [size, size]
    else:
        try:
            pair = list(size)
        except TypeError:
            pair = []
    if len(pair) != 2 or not all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 2 for v in pair):
        raise ConfigError(f"{OWNER}: size={size!r} is invalid; accepted: an integer >= 2 or [height, width]")
    return int(pair[0]), int(pair[1])


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _hidden_part(path: Path, under: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(under).parts)


def _scan(root: Path) -> tuple[list[str], list[Path], list[int], list[str]]:
    """Class names, image files, their labels, and the visible files left out (``"name: why"``)."""
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"{OWNER}: root '{root}' {problem}; expected a folder with one sub-folder per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    if not class_dirs:
        raise DataError(
            f"{OWNER}: root '{root}' has no class sub-folders; expected one sub-folder per "
            f"class holding {'/'.join(EXTENSIONS)} images (e.g. '{root}/cat/001.png')"
        )
    split_like = [p.name for p in class_dirs if p.name.lower() in SPLIT_NAMES]
    if split_like:
        trained = next((name for name in split_like if name.lower().startswith("train")), split_like[0])
        warn(f"{OWNER}: root '{root}' has class folders named like splits ({', '.join(split_like)}); class "
             f"folders are read recursively, so the splits would be trained on as classes: point dataset.root "
             f"at one split's folder, e.g. dataset.root={root / trained}")
    files: list[Path] = []
    labels: list[int] = []
    skipped = [f"{p.name}: not in a class folder" for p in sorted(root.iterdir()) if p.is_file() and _visible(p)]
    for label, class_dir in enumerate(class_dirs):
        found = sorted(p for p in class_dir.rglob("*") if p.is_file() and not _hidden_part(p, class_dir))
        images = [p for p in found if p.suffix.lower() in EXTENSIONS]
        skipped.extend(f"{p.relative_to(root)}: not a {'/'.join(EXTENSIONS)} file"
                       for p in found if p.suffix.lower() not in EXTENSIONS)
        if not images:
            raise DataError(
                f"{OWNER}: class folder '{class_dir}' holds no {'/'.join(EXTENSIONS)} images; "
                f"add images or remove the folder"
            )
        files.extend(images)
        labels.extend([label] * len(images))
    if len(class_dirs) < 2:
        raise DataError(
            f"{OWNER}: root '{root}' has a single class sub-folder ('{class_dirs[0].name}'); "
            f"a classifier needs at least two"
        )
    return [p.name for p in class_dirs], files, labels, skipped
