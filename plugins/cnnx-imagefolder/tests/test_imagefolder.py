"""cnnx-imagefolder: folders of image files written here, read through the registry."""

import json
import os
import subprocess
import sys

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


@pytest.mark.parametrize("setting, folder", [("off", None), ("{tmp}/mine", "mine/imagefolder")])
def test_the_default_cache_folder_follows_cnnx_cache_dir(tmp_path, monkeypatch, setting, folder):
    """It ignored CNNX_CACHE_DIR, whose `off` the README says turns caching off."""
    root = write_folder(tmp_path / "images")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CNNX_CACHE_DIR", setting.format(tmp=tmp_path))
    load(root, tmp_path, cache_dir=None)
    written = sorted(p.relative_to(tmp_path).parent.as_posix() for p in tmp_path.rglob("*.npz"))
    assert written == ([] if folder is None else [folder])


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
    with pytest.raises(DataError, match=r"class folder '.*zebra' holds no .png/.jpg/.jpeg/.bmp/.tif/.tiff/.webp/.ppm/.pgm images"):
        load(root, tmp_path)


def test_class_folders_named_like_splits_get_a_warning_naming_the_folder_to_give(tmp_path, capsys):
    """root/train/<class>/…, root/test/<class>/… given as root trained a "train vs test"
    classifier without a word: class folders are read recursively."""
    root = tmp_path / "downloaded"
    write_folder(root / "train")
    write_folder(root / "test")
    data = load(root, tmp_path)
    assert data.classes == ["test", "train"] and sum(data.sizes().values()) == 48
    assert capsys.readouterr().err == (
        f"cnnx: warning: dataset imagefolder: root '{root.resolve()}' has class folders named like splits (test, "
        f"train); class folders are read recursively, so the splits would be trained on as classes: point "
        f"dataset.root at one split's folder, e.g. dataset.root={root.resolve() / 'train'}\n")
    assert load(root / "train", tmp_path).classes == ["circle", "square", "triangle"]
    assert capsys.readouterr().err == ""


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


# -- high bit depths ---------------------------------------------------------------------------
def run_cli(args, cwd, **env):
    """``python -m cnnx ARGS`` in ``cwd``: the real command, as a user runs it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "cnnx", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def write_16bit_folder(root, levels=(12000, 52000), per_class=10, size=(9, 7)):
    """Class k's 16-bit grey images sit near ``levels[k]`` (out of 65535): above 255 all of
    them, so an 8-bit conversion would make every pixel white."""
    rng = np.random.default_rng(1)
    for k, level in enumerate(levels):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(level + rng.normal(0, 2000, (size[1], size[0])), 0, 65535).astype(np.uint16)
            Image.fromarray(pixels).save(root / f"c{k}" / f"{i:02d}.png")
    return root


def test_16bit_pngs_keep_their_levels(tmp_path):
    root = write_16bit_folder(tmp_path / "px16")
    assert Image.open(root / "c0" / "00.png").mode == "I;16"
    for color_mode, channels in (("grayscale", 1), ("rgb", 3)):
        data = load(root, tmp_path, size=[7, 9], color_mode=color_mode)  # their own size: no resampling
        x, y = data.train
        assert x.dtype == np.float32 and x.shape[1] == channels
        np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), np.array([12000, 52000])[y] / 65535, atol=0.02)
        # Exactly the file's levels / 65535, not 256 steps of them.
        originals = {np.asarray(Image.open(p), dtype=np.float32).tobytes() for p in sorted(root.rglob("*.png"))}
        decoded = {(np.float32(65535) * image[0]).round().astype(np.float32).tobytes() for image in x}
        assert decoded <= originals


def test_16bit_pngs_resized_mixed_with_8bit_ones_share_one_scale(tmp_path):
    root = write_16bit_folder(tmp_path / "mixed")
    Image.fromarray(np.full((7, 9), 47, np.uint8)).save(root / "c0" / "eight.png")  # 47/255 ≈ 12000/65535
    data = load(root, tmp_path, size=4, val_fraction=0, test_fraction=0)
    x, y = data.train
    assert 0 < x.min() and x.max() < 1
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), np.array([12000, 52000])[y] / 65535, atol=0.03)


def test_32bit_integer_and_float_images(tmp_path):
    from cnnx.data.image_files import read_image

    as_int = tmp_path / "int.tif"
    Image.fromarray(np.array([[0, 65535], [30000, 100]], np.int32)).save(as_int)
    assert Image.open(as_int).mode == "I"
    np.testing.assert_allclose(read_image(as_int)[0], np.array([[0, 65535], [30000, 100]]) / 65535, rtol=1e-6)
    as_float = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)).save(as_float)
    np.testing.assert_array_equal(read_image(as_float, "rgb"), np.tile([[[0, 0.25], [0.5, 1]]], (3, 1, 1)))
    beyond = tmp_path / "beyond.tif"
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(beyond)
    with pytest.raises(DataError, match=r"^image '[^']*beyond\.tif' holds 32-bit integer pixels in \[0, 70000\]"):
        read_image(beyond)
    with pytest.raises(DataError, match=r"^dataset x: image '[^']*beyond\.tif' holds 32-bit integer pixels"):
        read_image(beyond, owner="dataset x")  # named once, not wrapped in 'cannot read image'

    hdr = tmp_path / "hdr.tif"
    Image.fromarray(np.array([[0, 3.5]], np.float32)).save(hdr)
    with pytest.raises(DataError, match=r"^image '[^']*hdr\.tif' holds 32-bit float pixels in \[0, 3.5\]"):
        read_image(hdr)


@pytest.mark.slow
def test_training_on_16bit_pngs_learns_through_the_cli(tmp_path):
    """Before: every 16-bit pixel became 1.0, the run trained to chance and exited 0."""
    root = write_16bit_folder(tmp_path / "px16", per_class=15)
    result = run_cli(["dataset=imagefolder", f"dataset.root={root}", "dataset.size=8",
                      f"dataset.cache_dir={tmp_path / 'cache'}", "model.layers.fc2.out_features=2",
                      "trainer.epochs=8", "trainer.batch_size=4", "tracking.enabled=false"], tmp_path)
    assert result.returncode == 0, result.stderr
    test_line = [line for line in result.stdout.splitlines() if "test " in line and "test_acc=" in line]
    assert test_line and float(test_line[-1].split("test_acc=")[1].split()[0]) == 1.0, result.stdout


# -- huge images -------------------------------------------------------------------------------
def write_png_header(path, width, height):
    """A PNG that claims ``width``×``height`` pixels: Pillow refuses it from its header alone,
    as it would a real one of that size, without the test writing gigabytes."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


@pytest.mark.slow
def test_a_decompression_bomb_is_named_in_one_line_through_the_cli(tmp_path):
    """Before: a 65-line traceback ending in PIL's DecompressionBombError, naming no file."""
    root = write_folder(tmp_path / "images", classes=("cat", "dog"))
    write_png_header(root / "dog" / "huge.png", 20000, 20000)
    result = run_cli(["dataset=imagefolder", f"dataset.root={root}", "dataset.size=8",
                      f"dataset.cache_dir={tmp_path / 'cache'}", "model.layers.fc2.out_features=2",
                      "trainer.epochs=1", "tracking.enabled=false"], tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"image '{root / 'dog' / 'huge.png'}' has 400,000,000 pixels, over Pillow's decompression-bomb " \
           f"limit of 178,956,970; remove it or downscale it" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_a_large_image_is_trained_on_with_a_one_line_warning_naming_the_dataset(tmp_path):
    """Before: two lines an image, the first pointing into cnnx's image_files.py, the second
    quoting its source, and no word of which dataset read it."""
    root = write_folder(tmp_path / "images", classes=("cat", "dog"), per_class=6)
    large = root / "dog" / "000.png"
    # Pillow warns above MAX_IMAGE_PIXELS: lowered in the run's own process, as no option sets it.
    run = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 119; from cnnx.cli import main; "
           "sys.exit(main(sys.argv[1:]))")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(
        [sys.executable, "-c", run, "dataset=imagefolder", f"dataset.root={root}", "dataset.size=8",
         f"dataset.cache_dir={tmp_path / 'cache'}", "model.layers.fc2.out_features=2", "trainer.epochs=1",
         "tracking.enabled=false"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 12, result.stderr  # every image is 12×10 = 120 pixels
    assert f"cnnx: warning: dataset imagefolder: image '{large}' has 120 pixels, over Pillow's decompression-bomb " \
           f"limit of 119; decoded anyway, which takes memory and time" in lines


# -- what a run says it trains on --------------------------------------------------------------
@pytest.mark.slow
def test_the_run_says_how_many_images_it_uses_and_what_it_skipped(tmp_path):
    """Before: nothing on stdout, in app.log or in MLflow gave the counts, and unread files
    (.gif, images at the root) were left out silently."""
    from mlflow import MlflowClient

    root = write_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=10)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "cat" / "extra.gif")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "loose.png")
    (root / "dog" / ".DS_Store").write_text("hidden: not worth a word")
    result = run_cli(["dataset=imagefolder", f"dataset.root={root}", "dataset.size=6",
                      f"dataset.cache_dir={tmp_path / 'cache'}", "model.layers.fc2.out_features=2",
                      "trainer.epochs=1", "tracking.log_model=false", "tracking.log_plots=false",
                      "hydra.run.dir=run"], tmp_path)
    assert result.returncode == 0, result.stderr
    line = ("data: imagefolder:pets: 2 classes, 20 images (train 14, val 2, test 4); per class: cat 10, dog 10; "
            "skipped 2 files (e.g. loose.png: not in a class folder)")
    assert line in result.stdout.splitlines(), result.stdout
    assert line in (tmp_path / "run" / "app.log").read_text()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    params = run.data.params
    assert {k: params[k] for k in params if k.startswith("data.")} == {
        "data.num_classes": "2", "data.train_size": "14", "data.val_size": "2", "data.test_size": "4",
        "data.skipped_files": "2"}


def test_every_torchvision_extension_is_read_with_the_same_pixels(tmp_path):
    """Before: only .png/.jpg/.jpeg were read; a folder of .bmp or .tif images prepared for
    torchvision's ImageFolder was skipped file by file, or refused as empty."""
    from cnnx_imagefolder.loader import read_image

    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    rgb = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    root = tmp_path / "images"
    (root / "grey").mkdir(parents=True)
    (root / "rgb").mkdir()
    lossless = {".png": {}, ".bmp": {}, ".tif": {}, ".tiff": {}, ".webp": {"lossless": True}}
    for suffix, options in lossless.items():
        Image.fromarray(grey).save(root / "grey" / f"a{suffix}", **options)
        Image.fromarray(rgb).save(root / "rgb" / f"a{suffix}", **options)
    Image.fromarray(grey).save(root / "grey" / "a.pgm")
    Image.fromarray(rgb).save(root / "rgb" / "a.ppm")
    np.testing.assert_array_equal(read_image(root / "grey" / "a.png")[0] * np.float32(255), grey)
    for path in sorted(root.glob("*/a.*")):
        for color_mode in ("grayscale", "rgb"):
            as_png = read_image(path.with_suffix(".png"), color_mode)
            np.testing.assert_array_equal(read_image(path, color_mode), as_png, err_msg=f"{path} {color_mode}")
    data = load(root, tmp_path, size=[10, 12], val_fraction=0, test_fraction=0)
    assert data.skipped == []
    assert np.bincount(data.train[1]).tolist() == [6, 6]


def test_skipped_files_are_listed_with_why(tmp_path):
    root = write_folder(tmp_path / "images", classes=("cat", "dog"), per_class=4)
    (root / "cat" / "deeper").mkdir()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "cat" / "deeper" / "a.gif")
    (root / "notes.txt").write_text("x")
    (root / ".hidden.png").write_text("x")
    data = load(root, tmp_path, val_fraction=0, test_fraction=0)
    assert data.skipped == ["notes.txt: not in a class folder", "cat/deeper/a.gif: not a .png/.jpg/.jpeg/.bmp/.tif/.tiff/.webp/.ppm/.pgm file"]


@pytest.mark.slow
def test_a_class_too_small_to_split_is_named_through_the_cli(tmp_path):
    """Before: sklearn's "The least populated classes in y have only 1 member, which is too
    few. ... Classes with too few members are: [2]": neither the class nor what it needs."""
    root = write_folder(tmp_path / "images", classes=("cat", "dog", "rare"), per_class=10)
    for extra in sorted((root / "rare").iterdir())[2:]:
        extra.unlink()
    result = run_cli(["dataset=imagefolder", f"dataset.root={root}", "dataset.size=6",
                      f"dataset.cache_dir={tmp_path / 'cache'}", "model.layers.fc2.out_features=3",
                      "trainer.epochs=1", "tracking.enabled=false"], tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"cnnx: error: dataset imagefolder at '{root}': class 'rare' has 2 samples, too few to split with "
        f"val_fraction=0.1 and test_fraction=0.2; each class needs at least 3 (add samples to it, remove it, "
        f"or set the fractions lower or to 0)"), result.stderr


# -- predicting on image files as training read them -------------------------------------------
def write_odd_folder(root, per_class=12):
    """Odd-sized images, half RGB and half grayscale, whose class is their brightness."""
    rng = np.random.default_rng(2)
    for k, name in enumerate(("dark", "light")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(15, 40, 2)
            pixels = np.clip(60 + 120 * k + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            (image if i % 2 else image.convert("L")).save(root / name / f"{i:02d}.png")
    return root


def test_training_pixels_are_what_prepare_image_gives_for_the_recorded_preparation(tmp_path):
    from cnnx.data.image_files import prepare_image
    from cnnx_imagefolder.loader import _scan

    root = write_odd_folder(tmp_path / "odd", per_class=4)
    for color_mode in ("grayscale", "rgb"):
        data = load(root, tmp_path, size=[5, 7], color_mode=color_mode, val_fraction=0, test_fraction=0)
        assert data.preparation == {"resize": [5, 7], "color_mode": color_mode, "resample": "bilinear"}
        files = _scan(root.resolve())[1]
        expected = np.stack([prepare_image(path, json.loads(json.dumps(data.preparation))) for path in files])
        np.testing.assert_array_equal(data.train[0], expected)


@pytest.mark.slow
def test_predict_prepares_raw_training_images_as_training_did(tmp_path):
    """Before: `cnnx predict --run` refused the model's own training images ('56×37 pixels, but
    this model takes 16×16'; '1 channel, but this model takes 3'). Now the run's model records
    the imagefolder's preparation, and predict applies it: the raw test images get the very
    probabilities the run recorded for its test split."""
    from cnnx.data.splits import stratified_indices
    from cnnx_imagefolder.loader import _scan
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    root = write_odd_folder(tmp_path / "odd")
    result = run_cli(["dataset=imagefolder", f"dataset.root={root}", "dataset.size=[10,12]",
                      "dataset.color_mode=rgb", f"dataset.cache_dir={tmp_path / 'cache'}",
                      "model.layers.fc2.out_features=2", "trainer.epochs=3", "hydra.run.dir=run"], tmp_path)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (model,) = client.search_logged_models([run.info.experiment_id])
    spec = json.loads(open(download_artifacts(f"{model.artifact_location}/data/cnnx_model/cnnx_model.json",
                                              dst_path=str(tmp_path))).read())
    assert spec["preparation"] == {"resize": [10, 12], "color_mode": "rgb", "resample": "bilinear"}
    from cnnx.training.checkpoint_file import read_checkpoint
    checkpoint = next((tmp_path / "run" / "checkpoints").glob("epoch-*.npz"))
    assert read_checkpoint(checkpoint)[1]["classifier"]["preparation"] == spec["preparation"]
    recorded = np.load(client.download_artifacts(run.info.run_id, "plots/test_predictions.npz", str(tmp_path)))

    _, files, labels, _ = _scan(root.resolve())
    _, _, test = stratified_indices(np.asarray(labels), 0.1, 0.2, seed=0)
    test_files = [files[i] for i in test]
    assert {Image.open(p).mode for p in test_files} == {"L", "RGB"}  # both kinds, neither 10×12
    predicted = subprocess.run([sys.executable, "-m", "cnnx", "predict", "--run", run.info.run_id, "--top", "2",
                                *map(str, test_files)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    rows = [line.split() for line in predicted.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == [p.name for p in test_files]
    classes = ["dark", "light"]
    assert [row[1] for row in rows] == [classes[k] for k in recorded["predicted"]]
    np.testing.assert_allclose([float(row[2]) for row in rows], recorded["probabilities"].max(axis=1), atol=6e-5)


def test_a_size_whose_images_cannot_fit_in_memory_is_refused_before_decoding(tmp_path):
    from cnnx.data.memory import available_memory
    from cnnx.errors import ConfigError

    available = available_memory()
    if available is None:
        pytest.skip("this system does not say how much memory is available")
    root = write_folder(tmp_path / "images")
    images = sum(1 for _ in root.rglob("*.*"))
    too_large = int((available / (images * 14)) ** 0.5) + 2
    with pytest.raises(ConfigError, match=rf"^dataset.size={too_large} needs about .* GB to prepare {images} images"):
        load(root, tmp_path, size=too_large)
