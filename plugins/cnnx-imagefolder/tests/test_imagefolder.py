"""cnnx-imagefolder: folders of PNG/JPEG images written here, read through the registry."""

import os

import numpy as np
import pytest
from PIL import Image

from cnnx import registry
from cnnx.errors import ConfigError, DataError


def write_folder(root, classes=("circle", "square", "triangle"), per_class=8, size=(12, 10), rgb=False):
    """Class k's images are filled with grey level 40 + 80·k (plus noise), so the labels are
    recoverable from the pixels."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if rgb else (size[1], size[0])
            pixels = np.clip(40 + 80 * k + rng.normal(0, 5, shape), 0, 255).astype(np.uint8)
            suffix = ".jpg" if i % 4 == 3 else ".png"
            Image.fromarray(pixels).save(root / name / f"{i:03d}{suffix}")
    return root


def load(root, tmp_path, **options):
    options = {"root": str(root), "size": 6, "normalize": "none", "cache_dir": str(tmp_path / "cache"), **options}
    return registry.datasets.create("imagefolder", options, "dataset")


def test_dataset_conforms(cnnx_conformance, tmp_path):
    root = write_folder(tmp_path / "images")
    cnnx_conformance.dataset("imagefolder", {"root": str(root), "size": 6, "cache_dir": str(tmp_path / "c")})
    assert cnnx_conformance.registered("dataset", "cnnx-imagefolder") == ["imagefolder"]


def test_classes_labels_sizes_and_pixels(tmp_path):
    root = write_folder(tmp_path / "images")
    (root / "circle" / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    data = load(root, tmp_path, size=[5, 7], val_fraction=0.25, test_fraction=0.25)
    assert data.classes == ["circle", "square", "triangle"]
    assert data.input_shape == (1, 5, 7)
    assert data.sizes() == {"train": 12, "val": 6, "test": 6}
    for x, y in (data.train, data.val, data.test):
        assert x.dtype == np.float32 and y.dtype == np.int64
        # Grey levels 40/120/200 → per-image means near 0.16/0.47/0.78: the labels match the folders.
        np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), (40 + 80 * y) / 255, atol=0.03)
    assert np.bincount(data.train[1]).tolist() == [4, 4, 4]


def test_rgb_and_standard_normalisation(tmp_path):
    root = write_folder(tmp_path / "images", rgb=True)
    data = load(root, tmp_path, color_mode="rgb", normalize="standard")
    assert data.input_shape == (3, 6, 6)
    np.testing.assert_allclose(data.train[0].mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_split_depends_on_the_seed_only(tmp_path):
    root = write_folder(tmp_path / "images")
    a, b, c = (load(root, tmp_path, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.train[0], b.train[0])
    assert not np.array_equal(a.train[0], c.train[0])


def test_decoded_arrays_are_cached_and_refreshed_when_files_change(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "images")
    first = load(root, tmp_path)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image although the cache holds it")

    monkeypatch.setattr(Image, "open", no_decoding)
    again = load(root, tmp_path)
    np.testing.assert_array_equal(first.train[0], again.train[0])

    monkeypatch.undo()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "square" / "new.png")
    grown = load(root, tmp_path)
    assert sum(grown.sizes().values()) == sum(first.sizes().values()) + 1
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_empty_folder_single_class_and_empty_class_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"root '.*empty' has no class sub-folders"):
        load(tmp_path / "empty", tmp_path)
    with pytest.raises(DataError, match=r"root '.*missing' does not exist"):
        load(tmp_path / "missing", tmp_path)
    single = write_folder(tmp_path / "single", classes=("cat",))
    with pytest.raises(DataError, match=r"single class sub-folder \('cat'\); a classifier needs at least two"):
        load(single, tmp_path)
    root = write_folder(tmp_path / "images")
    (root / "zebra").mkdir()
    (root / "zebra" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"class folder '.*zebra' holds no .png/.jpg/.jpeg images"):
        load(root, tmp_path)


def test_unreadable_image_is_named(tmp_path):
    root = write_folder(tmp_path / "images")
    bad = root / "square" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot read image '.*square/broken\.png'"):
        load(root, tmp_path)


def test_bad_options_name_the_key(tmp_path):
    root = write_folder(tmp_path / "images")
    with pytest.raises(ConfigError, match="color_mode='cmyk' is not known; accepted: grayscale, rgb"):
        load(root, tmp_path, color_mode="cmyk")
    with pytest.raises(ConfigError, match=r"size=\[4\] is invalid"):
        load(root, tmp_path, size=[4])


def test_unwritable_cache_only_costs_time_and_says_so(tmp_path, capsys):
    root = write_folder(tmp_path / "images")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    data = load(root, tmp_path, cache_dir=str(blocker / "cache"))
    assert data.num_classes == 3 and os.path.isfile(blocker)
    assert capsys.readouterr().err.strip() == (
        f"cnnx: warning: cannot cache the decoded images in '{blocker / 'cache'}' (Not a directory); "
        f"set dataset.cache_dir to a writable folder")
