"""`cnnx predict` through the real CLI on runs trained by the real CLI (an image folder, a
sqlite MLflow store in a tmp dir): what a user sees once their data moved on since training."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from e2e_helpers import run_cli
from PIL import Image

SIZE = 8
#: Class k's images are bright in channel k, so each class is told apart from the pixels.
CLASSES = ("bird", "cat", "dog")


def write_class(root, name: str, channel: int, count: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed + channel)
    (root / name).mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
        pixels[..., channel % 3] = 200 + rng.integers(0, 40, (SIZE, SIZE))
        Image.fromarray(pixels, "RGB").save(root / name / f"{i:03d}.png")


def train(workdir, root: str, classes: int, run_dir: str) -> None:
    result = run_cli([
        "dataset=imagefolder", f"dataset.root={root}", f"dataset.size={SIZE}", "dataset.color_mode=rgb",
        "dataset.cache=false", f"model.layers.fc2.out_features={classes}", "trainer.epochs=2",
        "trainer.checkpoint.enabled=true", "tracking.log_plots=false", f"hydra.run.dir={run_dir}",
    ], workdir)
    assert result.returncode == 0, result.stderr[-3000:]


def without_recorded_classes(checkpoint, to):
    """The checkpoint as a cnnx that did not record the model's description wrote it."""
    from cnnx.training.checkpoint_file import CLASSIFIER, read_checkpoint, write_checkpoint

    arrays, header = read_checkpoint(checkpoint)
    assert CLASSIFIER in header
    del header[CLASSIFIER]
    return write_checkpoint(to, arrays, {k: v for k, v in header.items() if k not in ("format", "version")})


@pytest.fixture(scope="module")
def pets_run(installed_plugins, tmp_path_factory):
    """A 3-class image-folder run, its newest checkpoint and config, and two images to predict."""
    workdir = tmp_path_factory.mktemp("pets")
    for channel, name in enumerate(CLASSES):
        write_class(workdir / "pets", name, channel)
    write_class(workdir / "new", "x", 2, count=1, seed=7)  # a dog-like image
    write_class(workdir / "new2", "x", 1, count=1, seed=8)  # a cat-like image
    train(workdir, "pets", 3, "run")
    checkpoint = sorted((workdir / "run" / "checkpoints").glob("epoch-*.npz"))[-1]
    images = [str(workdir / "new" / "x" / "000.png"), str(workdir / "new2" / "x" / "000.png")]
    return workdir, checkpoint, workdir / "run" / ".hydra" / "config.yaml", images


def predict(workdir, *args):
    return run_cli(["predict", *map(str, args)], workdir)


def test_predict_names_the_classes_the_run_trained_on_after_the_class_folders_changed(pets_run):
    """Adding a class folder after training renamed the model's outputs (exit 0, no warning);
    removing one gave `IndexError: list index out of range`. The checkpoint now records the
    classes and the normalisation, so the dataset as it is now plays no part."""
    workdir, checkpoint, config, images = pets_run
    before = predict(workdir, "--weights", checkpoint, "--config", config, *images)
    assert before.returncode == 0, before.stderr
    rows = [line.split() for line in before.stdout.splitlines()[1:]]
    assert len(rows) == 2 and all(row[1] in CLASSES for row in rows)

    shutil.move(workdir / "pets" / "bird", workdir / "bird-aside")
    try:
        removed = predict(workdir, "--weights", checkpoint, "--config", config, *images)
    finally:
        shutil.move(workdir / "bird-aside", workdir / "pets" / "bird")
    assert (removed.returncode, removed.stdout, removed.stderr) == (0, before.stdout, "")

    write_class(workdir / "pets", "ant", 0, seed=3)  # sorts first: every old label moves up one
    try:
        added = predict(workdir, "--weights", checkpoint, "--config", config, *images)
    finally:
        shutil.rmtree(workdir / "pets" / "ant")
    assert (added.returncode, added.stdout, added.stderr) == (0, before.stdout, "")

    # The checkpoint is complete on its own: no config, nor training data, needed.
    alone = predict(workdir, "--weights", checkpoint, *images)
    assert (alone.returncode, alone.stdout) == (0, before.stdout)


def test_an_older_checkpoint_still_predicts_and_is_refused_once_the_class_count_changed(pets_run, tmp_path):
    workdir, checkpoint, config, images = pets_run
    old = without_recorded_classes(checkpoint, tmp_path / "epoch-old.npz")
    current = predict(workdir, "--weights", checkpoint, *images)
    same = predict(workdir, "--weights", old, "--config", config, *images)
    assert (same.returncode, same.stdout) == (0, current.stdout)
    needs_config = predict(workdir, "--weights", old, *images)
    assert needs_config.returncode == 2 and "needs --config" in needs_config.stderr

    shutil.move(workdir / "pets" / "bird", workdir / "bird-aside")
    try:
        removed = predict(workdir, "--weights", old, "--config", config, *images)
    finally:
        shutil.move(workdir / "bird-aside", workdir / "pets" / "bird")
    assert removed.returncode == 2 and removed.stdout == ""
    assert removed.stderr.strip() == (
        f"cnnx: error: --config {config}: its dataset now has 2 classes (cat, dog), but the model in "
        f"'{old}' outputs 3; the classes changed since training, so its outputs cannot be named: "
        f"restore the dataset as it was, or predict with --run, --model or a newly written "
        f"checkpoint, which record the classes")

    write_class(workdir / "pets", "ant", 0, seed=3)
    try:
        added = predict(workdir, "--weights", old, "--config", config, *images)
    finally:
        shutil.rmtree(workdir / "pets" / "ant")
    assert added.returncode == 2 and added.stdout == ""
    assert "now has 4 classes (ant, bird, cat, dog), but the model" in added.stderr
    assert len(added.stderr.strip().splitlines()) == 1


def test_a_config_of_another_model_than_the_checkpoint_records_is_refused(pets_run, tmp_path):
    import yaml

    workdir, checkpoint, config, images = pets_run
    other = yaml.safe_load(config.read_text())
    other["model"]["layers"]["fc1"]["out_features"] = 7
    assert list(other["model"]["layers"])[-1] == "fc2"
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    result = predict(workdir, "--weights", checkpoint, "--config", tmp_path / "other.yaml", *images)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"cnnx: error: --config {tmp_path / 'other.yaml'}: its model.layers differ from those recorded "
        f"in checkpoint '{checkpoint}'; pass the config of the run that wrote it, or leave --config "
        f"out (the recorded model is complete)")


def write_image_kinds(folder) -> dict[str, object]:
    """One SIZE×SIZE file of each kind a user's folder holds, by name."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    rgb[..., 2] = 220  # dog-like
    kinds = {
        "photo.jpg": Image.fromarray(rgb, "RGB"),
        "SCAN.JPEG": Image.fromarray(rgb[..., 0], "L"),
        "cmyk.jpg": Image.fromarray(rgb, "RGB").convert("CMYK"),
        "palette.png": Image.fromarray(rgb, "RGB").quantize(16),
        "alpha.png": Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (SIZE, SIZE), np.uint8)]), "RGBA"),
        "grey_alpha.png": Image.fromarray(np.dstack([rgb[..., 1], rgb[..., 0]]), "LA"),
        "bits.png": Image.fromarray(rgb[..., 0] > 127),
    }
    for name, image in kinds.items():
        image.save(folder / name)
    return kinds


@pytest.mark.parametrize("mode", ["rgb", "grayscale"])
def test_predict_decodes_each_image_file_as_training_does(installed_plugins, tmp_path, mode):
    from cnnx_imagefolder.loader import load_imagefolder

    from cnnx.predict import image_for_model

    kinds = write_image_kinds(tmp_path / "kinds")
    for name in kinds:  # one class per kind of file, two copies each (a split needs two)
        (tmp_path / "root" / name.replace(".", "_")).mkdir(parents=True)
        for copy in ("a.png", "b.png"):
            shutil.copy(tmp_path / "kinds" / name, tmp_path / "root" / name.replace(".", "_") / copy)
    size = SIZE + 3  # resized, both in training and in predict
    data = load_imagefolder(tmp_path / "root", size=size, color_mode=mode, normalize="none",
                            val_fraction=0.0, test_fraction=0.0, cache=False)
    model = SimpleNamespace(preparation=data.preparation, input_shape=data.input_shape)
    x, y = data.train
    assert len(x) == 2 * len(kinds)
    for image, label in zip(x, y, strict=True):
        path = tmp_path / "root" / data.classes[label] / "a.png"
        np.testing.assert_array_equal(image_for_model(path, model), image, err_msg=data.classes[label])


def test_sixteen_bit_greyscale_is_read_on_its_own_levels_not_clipped(tmp_path):
    from cnnx.predict import image_for_model

    levels = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(levels).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode == "I;16"
    expected = levels.astype(np.float32) / np.float32(65535.0)
    for channels in (1, 3):
        model = SimpleNamespace(preparation=None, input_shape=(channels, 16, 16), normalization={"mode": "none"})
        np.testing.assert_array_equal(image_for_model(tmp_path / "wide.png", model), np.stack([expected] * channels))


def test_predict_takes_jpegs_and_predicts_them_as_the_training_pixels(pets_run, tmp_path):
    """JPEGs, which imagefolder trains on, were refused: `unsupported type .jpg; accepted:
    .npz, .png`."""
    from cnnx.data.image_files import prepare_image, preparation

    workdir, checkpoint, _, _ = pets_run
    names = list(write_image_kinds(tmp_path))
    result = predict(workdir, "--weights", checkpoint, *(tmp_path / name for name in names))
    assert result.returncode == 0, result.stderr
    trained = np.stack([prepare_image(tmp_path / name, preparation((SIZE, SIZE), "rgb")) for name in names])
    np.savez(tmp_path / "decoded.npz", x=trained)
    reference = predict(workdir, "--weights", checkpoint, tmp_path / "decoded.npz")
    assert reference.returncode == 0, reference.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == names
    assert [row[1:] for row in rows] == [line.split()[1:] for line in reference.stdout.splitlines()[1:]]


def test_channels_last_images_are_refused_naming_the_layout_not_their_height_as_channels(pets_run, tmp_path):
    """(N, 8, 8, 3) images, as PIL and TensorFlow hold them, were refused as "8 channels, but
    this model takes 3": the height named as the channel count."""
    workdir, checkpoint, _, _ = pets_run
    pixels = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    np.savez(tmp_path / "nhwc.npz", x=pixels)
    refused = predict(workdir, "--weights", checkpoint, tmp_path / "nhwc.npz")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (
        f"cnnx: error: images in '{tmp_path / 'nhwc.npz'}': shape (2, {SIZE}, {SIZE}, 3) looks channels-last "
        f"(N, H, W, C); this model takes (N, 3, {SIZE}, {SIZE}): transpose the array with x.transpose(0, 3, 1, 2)")
    np.savez(tmp_path / "nchw.npz", x=pixels.transpose(0, 3, 1, 2))
    transposed = predict(workdir, "--weights", checkpoint, tmp_path / "nchw.npz")
    assert transposed.returncode == 0, transposed.stderr


def test_images_on_a_smaller_scale_than_training_get_a_warning_and_normal_ones_none(tmp_path):
    """A model trained on 0–255 pixels given [0, 1] images predicted constant answers silently:
    the InputRangeWarning fired only above the training range."""
    rng = np.random.default_rng(2)
    y = np.arange(40) % 2
    x = rng.integers(12, 60, (40, 1, 8, 8)).astype(np.uint8)
    for image, label in zip(x, y, strict=True):
        image[0, :4] += 170 if label == 0 else 0
        image[0, 4:] += 170 if label == 1 else 0
    np.savez(tmp_path / "bytes.npz", x=x, y=y)
    result = run_cli(["dataset=npz", "dataset.path=bytes.npz", "dataset.normalize=standard",
                      "model.layers.fc2.out_features=2", "trainer.epochs=1", "trainer.checkpoint.enabled=true",
                      "tracking.log_plots=false", "hydra.run.dir=run"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = sorted((tmp_path / "run" / "checkpoints").glob("epoch-*.npz"))[-1]
    np.savez(tmp_path / "unit.npz", x=x[:3] / 255.0)
    np.savez(tmp_path / "bytes3.npz", x=x[:3])
    np.savez(tmp_path / "dark.npz", x=(x[:3] // 4))  # dim, but on the training scale
    np.savez(tmp_path / "blank.npz", x=np.zeros((1, 1, 8, 8), np.uint8))

    smaller = predict(tmp_path, "--weights", checkpoint, tmp_path / "unit.npz")
    assert smaller.returncode == 0 and len(smaller.stdout.splitlines()) == 4
    unit = x[:3] / 255.0
    assert smaller.stderr.strip() == (
        f"cnnx: warning: images in '{tmp_path / 'unit.npz'}': pixels span [{unit.min():.4g}, {unit.max():.4g}], "
        f"but this model was trained on pixels in [12, {x.max()}]: they look like a smaller scale, and "
        f"predictions on it mean little; rescale the images as the training data was (multiply [0, 1] "
        f"images by 255 for a model trained on 0–255 pixels)")
    for name in ("bytes3.npz", "dark.npz", "blank.npz"):
        normal = predict(tmp_path, "--weights", checkpoint, tmp_path / name)
        assert (normal.returncode, normal.stderr) == (0, ""), name


def huge_png_header(path, width: int, height: int) -> None:
    """A PNG file that declares width×height grey pixels (its data is never reached)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_a_huge_image_is_refused_in_one_line_naming_the_file_and_its_size(pets_run, tmp_path):
    """PIL's DecompressionBombError crashed predict with a 65-line traceback naming no file."""
    workdir, checkpoint, _, images = pets_run
    huge_png_header(tmp_path / "huge.png", 20000, 20000)
    result = predict(workdir, "--weights", checkpoint, images[0], tmp_path / "huge.png")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip() == (
        f"cnnx: error: image '{tmp_path / 'huge.png'}' has 400,000,000 pixels, over Pillow's decompression-bomb "
        f"limit of 178,956,970; remove it or downscale it")


def test_a_large_image_under_pillows_refusal_is_predicted_with_a_one_line_warning(pets_run, monkeypatch, capsys):
    from PIL import Image

    from cnnx.predict import main

    _, checkpoint, _, images = pets_run
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", SIZE * SIZE - 1)  # warns above it, refuses above twice it
    assert main(["--weights", str(checkpoint), images[0]]) == 0
    captured = capsys.readouterr()
    assert captured.err == (f"cnnx: warning: image '{images[0]}' has {SIZE * SIZE} pixels, over Pillow's "
                            f"decompression-bomb limit of {SIZE * SIZE - 1}; decoded anyway, which takes memory "
                            f"and time\n")
    assert len(captured.out.splitlines()) == 2


def test_a_folder_predicts_the_images_directly_in_it_by_name(pets_run, tmp_path):
    """`cnnx predict ... new` said "image file 'new' not found" of a folder that exists."""
    workdir, checkpoint, _, images = pets_run
    folder = workdir / "batch"
    folder.mkdir()
    shutil.copy(images[1], folder / "b.png")
    shutil.copy(images[0], folder / "a.PNG")
    shutil.copy(images[0], folder / ".hidden.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    shutil.copy(images[0], folder / "sub" / "c.png")  # not recursive
    Image.new("RGB", (SIZE + 1, SIZE)).save(folder / "wide.png")  # resized, as training resized its images
    (folder / "broken.png").write_text("not a PNG")
    result = predict(workdir, "--weights", checkpoint, "batch")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == \
        ["image", "batch/a.PNG", "batch/b.png", "batch/wide.png"]
    warning = result.stderr.strip()
    assert warning.startswith("cnnx: warning: cannot read image 'batch/broken.png': ") and \
        warning.endswith("; skipped") and "\n" not in warning, warning
    # more files skipped alike: one line (a folder of 40 such files printed 40)
    for more in ("broken2.png", "broken3.png"):
        (folder / more).write_text("not a PNG")
    alike = predict(workdir, "--weights", checkpoint, "batch")
    assert alike.stdout == result.stdout
    assert alike.stderr.strip() == warning + ", and 2 more files of 'batch' alike"
    for more in ("broken2.png", "broken3.png"):
        (folder / more).unlink()
    single = predict(workdir, "--weights", checkpoint, images[0], images[1])
    assert [line.split()[1:] for line in result.stdout.splitlines()[1:3]] == \
        [line.split()[1:] for line in single.stdout.splitlines()[1:]]

    # Files of one name from two folders: each row names its file as given (both read '001.png').
    (workdir / "other").mkdir()
    shutil.copy(images[0], workdir / "other" / "b.png")
    same_name = predict(workdir, "--weights", checkpoint, "batch/b.png", "other/b.png", "batch/a.PNG")
    assert [line.split()[0] for line in same_name.stdout.splitlines()] == ["image", "batch/b.png", "other/b.png",
                                                                          "a.PNG"]

    (workdir / "empty").mkdir()
    (workdir / "empty" / "notes.txt").write_text("")
    empty = predict(workdir, "--weights", checkpoint, "empty")
    assert (empty.returncode, empty.stdout) == (2, "")
    assert empty.stderr.strip() == ("cnnx: error: folder 'empty': holds no .npz/.png/.jpg/.jpeg/.bmp/.tif/.tiff/.webp/.ppm/.pgm file; "
                                    "pass image files or a folder of them")


def train_on_npz(workdir, x, y, *overrides, **arrays):
    """A two-class run on ``x``/``y`` (plus ``arrays``, such as ``classes``) saved as data.npz,
    into ``workdir/run``."""
    np.savez(workdir / "data.npz", x=x, y=y, **arrays)
    result = run_cli(["dataset=npz", "dataset.path=data.npz", "model.layers.fc2.out_features=2",
                      "tracking.log_plots=false", "hydra.run.dir=run", *overrides], workdir)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_run_logged_without_its_model_predicts_from_its_weights_and_config(tmp_path):
    """--run gave up on a run logged with tracking.log_model=false (the README's advice for
    large sweeps), though the run holds weights.npz and config.yaml, what --weights takes."""
    from e2e_helpers import all_runs

    rng = np.random.default_rng(3)
    y = np.arange(40) % 2
    x = rng.random((40, 1, 8, 8), dtype=np.float32)
    x[y == 0, 0, :4] += 1.0
    train_on_npz(tmp_path, x, y, "trainer.epochs=1", "trainer.checkpoint.enabled=true", "tracking.log_model=false")
    (run,) = all_runs(tmp_path)
    np.savez(tmp_path / "three.npz", x=x[:3])
    from_run = predict(tmp_path, "--run", run.info.run_id, tmp_path / "three.npz")
    assert from_run.returncode == 0, from_run.stderr
    checkpoint = sorted((tmp_path / "run" / "checkpoints").glob("epoch-*.npz"))[-1]
    from_checkpoint = predict(tmp_path, "--weights", checkpoint, tmp_path / "three.npz")
    assert from_run.stdout == from_checkpoint.stdout and len(from_run.stdout.splitlines()) == 4


def test_a_run_without_its_model_names_its_outputs_as_trained_whatever_became_of_its_data(tmp_path):
    """--run rebuilt the class names from the dataset as it is now: renamed classes relabelled every
    prediction, silently, and data moved away stopped it. The run records them beside its weights."""
    from e2e_helpers import all_runs

    rng = np.random.default_rng(4)
    y = np.arange(40) % 2
    x = rng.random((40, 1, 8, 8), dtype=np.float32)
    x[y == 0, 0, :4] += 1.0
    train_on_npz(tmp_path, x, y, "trainer.epochs=1", "tracking.log_model=false", classes=np.array(["cat", "dog"]))
    (run,) = all_runs(tmp_path)
    np.savez(tmp_path / "three.npz", x=x[:3])
    before = predict(tmp_path, "--run", run.info.run_id, tmp_path / "three.npz")
    assert before.returncode == 0, before.stderr
    assert "cat" in before.stdout
    np.savez(tmp_path / "data.npz", x=x, y=y, classes=np.array(["dog", "cat"]))  # the names swapped
    assert predict(tmp_path, "--run", run.info.run_id, tmp_path / "three.npz").stdout == before.stdout
    (tmp_path / "data.npz").rename(tmp_path / "moved.npz")
    assert predict(tmp_path, "--run", run.info.run_id, tmp_path / "three.npz").stdout == before.stdout


def test_a_run_without_its_model_or_outputs_record_whose_training_data_is_gone_names_the_run(tmp_path):
    """The fallback's errors named the downloaded config.yaml as --config, which the user never
    passed, and advised --run, which they had used. (Runs of cnnx before 0.2.5 logged no
    cnnx_model.json beside their weights: their data is rebuilt for its classes.)"""
    from e2e_helpers import all_runs

    rng = np.random.default_rng(4)
    train_on_npz(tmp_path, rng.random((40, 1, 8, 8), dtype=np.float32), np.arange(40) % 2, "trainer.epochs=1",
                 "tracking.log_model=false")
    (run,) = all_runs(tmp_path)
    (recorded,) = tmp_path.glob(f"mlruns/*/{run.info.run_id}/artifacts/cnnx_model.json")
    recorded.unlink()  # as an earlier cnnx logged it
    (tmp_path / "data.npz").rename(tmp_path / "moved.npz")
    np.savez(tmp_path / "three.npz", x=rng.random((3, 1, 8, 8), dtype=np.float32))
    refused = predict(tmp_path, "--run", run.info.run_id, tmp_path / "three.npz")
    assert refused.returncode == 2
    error = refused.stderr.strip()
    assert error.startswith(f"cnnx: error: --run {run.info.run_id} (its config.yaml: it logged no model): the "
                            "training data is needed to recover its normalisation"), error
    assert error.endswith("log the model with tracking.log_model=true, which carries it") and "\n" not in error
    # A mistyped id was told to log its model; a mistyped option was told that --run is required.
    mistyped = predict(tmp_path, "--run", run.info.run_id[:-1] + "x", tmp_path / "three.npz")
    assert mistyped.returncode == 2 and mistyped.stderr.strip() == (
        f"cnnx: error: --run {run.info.run_id[:-1]}x: no such run in MLflow store 'sqlite:///mlflow.db'; a run's "
        "id is in the line it ends with (cnnx: run ID in experiment …), and cnnx compare EXPERIMENT lists them")
    option = predict(tmp_path, "--runs", run.info.run_id, tmp_path / "three.npz")
    assert option.returncode == 2 and option.stderr.splitlines()[-1] == "cnnx predict: error: unrecognized arguments: --runs"


def test_image_files_reach_a_model_trained_on_byte_pixels_on_that_scale(tmp_path):
    """An npz of uint8 images trained with dataset.normalize=unit (cnnx's own advice) took
    image files in [0, 1]: every one came out the same class, with a range warning each."""
    rng = np.random.default_rng(5)
    y = np.arange(60) % 2
    x = rng.integers(0, 90, (60, 1, 8, 8)).astype(np.uint8)
    x[y == 0, 0, :4] += 160
    train_on_npz(tmp_path, x, y, "dataset.normalize=unit", "trainer.epochs=3", "trainer.checkpoint.enabled=true",
                 "tracking=none")
    checkpoint = sorted((tmp_path / "run" / "checkpoints").glob("epoch-*.npz"))[-1]
    for i in range(4):
        Image.fromarray(x[i, 0], "L").save(tmp_path / f"{i}.png")
    np.savez(tmp_path / "four.npz", x=x[:4])
    from_files = predict(tmp_path, "--weights", checkpoint, *(tmp_path / f"{i}.png" for i in range(4)))
    from_array = predict(tmp_path, "--weights", checkpoint, tmp_path / "four.npz")
    assert from_files.returncode == 0 and "warning" not in from_files.stderr, from_files.stderr
    assert [line.split()[1:] for line in from_files.stdout.splitlines()] == \
        [line.split()[1:] for line in from_array.stdout.splitlines()]


def test_an_archive_with_labels_gets_the_accuracy_on_them(tmp_path):
    """Labelled new data could only be predicted: y was ignored, and nothing measured the model."""
    rng = np.random.default_rng(6)
    y = np.arange(60) % 2
    x = rng.random((60, 1, 8, 8), dtype=np.float32)
    x[y == 0, 0, :4] += 1.0
    train_on_npz(tmp_path, x, y, "trainer.epochs=2", "trainer.checkpoint.enabled=true", "tracking=none")
    checkpoint = sorted((tmp_path / "run" / "checkpoints").glob("epoch-*.npz"))[-1]
    np.savez(tmp_path / "new.npz", x=x[:10], y=y[:10])
    result = predict(tmp_path, "--weights", checkpoint, tmp_path / "new.npz")
    assert result.returncode == 0, result.stderr
    predicted = [int(line.split()[1]) for line in result.stdout.splitlines()[1:]]
    right = sum(p == t for p, t in zip(predicted, y[:10]))
    assert result.stderr.strip() == (f"cnnx: accuracy on the 10 labelled images (array y): {right / 10:.4f} "
                                     f"({right} right)")
    np.savez(tmp_path / "odd.npz", x=x[:3], y=np.array([0, 1]))
    odd = predict(tmp_path, "--weights", checkpoint, tmp_path / "odd.npz")
    assert odd.returncode == 0 and odd.stderr.strip() == (
        f"cnnx: warning: labels 'y' in '{tmp_path / 'odd.npz'}' are not 3 class indices in [0, 2) (shape (2,), "
        f"dtype int64); no accuracy for them")
    # labels saved as floats (the training loader takes them), and an archive numbering its classes otherwise
    np.savez(tmp_path / "floats.npz", x=x[:10], y=y[:10].astype(np.float32))
    assert predict(tmp_path, "--weights", checkpoint, tmp_path / "floats.npz").stderr == result.stderr
    np.savez(tmp_path / "renumbered.npz", x=x[:10], y=1 - y[:10], classes=np.array(["1", "0"]))
    assert predict(tmp_path, "--weights", checkpoint, tmp_path / "renumbered.npz").stderr == result.stderr
    np.savez(tmp_path / "bytes.npz", x=x[:10], y=y[:10], classes=np.array([b"0", b"1"]))  # decoded, as training does
    assert predict(tmp_path, "--weights", checkpoint, tmp_path / "bytes.npz").stderr == result.stderr
    # names saved as Python objects cannot be read: the images are predicted, without an accuracy
    np.savez(tmp_path / "objects.npz", x=x[:10], y=y[:10], classes=np.array(["0", "1"], dtype=object))
    objects = predict(tmp_path, "--weights", checkpoint, tmp_path / "objects.npz")
    assert objects.returncode == 0
    assert [line.split()[1:] for line in objects.stdout.splitlines()] == \
        [line.split()[1:] for line in result.stdout.splitlines()]
    assert objects.stderr.strip() == (
        f"cnnx: warning: classes in '{tmp_path / 'objects.npz'}' are not a 1-D array of strings (a list saved as "
        "Python objects is not read: save np.array(names).astype(str)); no accuracy for its labels")
