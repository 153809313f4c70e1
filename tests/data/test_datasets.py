from __future__ import annotations

import warnings

import numpy as np
import pytest

from cnnx.data.digits import load_digits
from cnnx.data.npz import load_npz
from cnnx.data.resize import bilinear_matrix, resize_bilinear
from cnnx.data.splits import DataSplits, check_loaded, stratified_indices, stratified_split
from cnnx.data.synthetic import PATTERNS, load_synthetic
from cnnx.data.validation import check_dataset
from cnnx.errors import ConfigError, DataError


def all_arrays(d: DataSplits):
    return [*d.train, *d.val, *d.test]


def assert_same(a: DataSplits, b: DataSplits):
    for u, v in zip(all_arrays(a), all_arrays(b), strict=True):
        np.testing.assert_array_equal(u, v)


def assert_well_formed(d: DataSplits, input_shape, num_classes):
    assert d.input_shape == input_shape
    assert d.num_classes == num_classes == len(d.classes)
    for x, y in (d.train, d.val, d.test):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == input_shape and x.ndim == 4
        assert y.shape == (len(x),)
        assert x.flags.c_contiguous
        if len(y):
            assert y.min() >= 0 and y.max() < num_classes


def assert_stratified(d: DataSplits, slack: int = 1):
    """Each split holds every class in the dataset's proportion, up to rounding."""
    labels = np.concatenate([d.train[1], d.val[1], d.test[1]])
    overall = np.bincount(labels, minlength=d.num_classes)
    for _, y in (d.train, d.val, d.test):
        if not len(y):
            continue
        counts = np.bincount(y, minlength=d.num_classes)
        expected = overall * len(y) / len(labels)
        assert np.all(np.abs(counts - expected) <= slack + 1e-9), (counts, expected)


def accuracy_of_linear_model(d: DataSplits) -> float:
    from sklearn.linear_model import LogisticRegression

    x_train = d.train[0].reshape(len(d.train[0]), -1)
    x_test = d.test[0].reshape(len(d.test[0]), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the score is what matters
        model = LogisticRegression(max_iter=200).fit(x_train, d.train[1])
    return model.score(x_test, d.test[1])


# -- digits ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits8():
    return load_digits()


def test_digits_shapes_dtypes_and_sizes(digits8):
    assert_well_formed(digits8, (1, 8, 8), 10)
    assert digits8.name == "digits"
    assert digits8.classes == [str(i) for i in range(10)]
    sizes = digits8.sizes()
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 360 and sizes["val"] == 180  # ceil(0.2 N), ceil(0.1 N)
    assert_stratified(digits8)


def test_digits_resized_to_32():
    d = load_digits(size=32, val_fraction=0.0)
    assert_well_formed(d, (1, 32, 32), 10)
    assert len(d.val[0]) == 0
    assert_stratified(d)


def test_digits_are_deterministic_per_seed(digits8):
    assert_same(digits8, load_digits())
    other = load_digits(seed=1)
    assert not np.array_equal(other.test[1], digits8.test[1])
    assert not np.array_equal(other.train[0], digits8.train[0])


def test_digits_standardised_with_train_statistics_only(digits8):
    raw = load_digits(normalize="none")
    x_raw = raw.train[0].astype(np.float64)
    mean, std = x_raw.mean(), x_raw.std()
    assert digits8.normalization["mode"] == "standard"
    np.testing.assert_allclose(digits8.normalization["shift"], [mean], rtol=1e-6)
    np.testing.assert_allclose(digits8.normalization["scale"], [std], rtol=1e-6)
    assert abs(digits8.train[0].mean()) < 1e-5 and abs(digits8.train[0].std() - 1) < 1e-5
    # val/test use the train transform, not their own statistics.
    for raw_split, split in ((raw.val, digits8.val), (raw.test, digits8.test)):
        np.testing.assert_allclose(split[0], (raw_split[0] - mean) / std, rtol=1e-5, atol=1e-5)
        assert abs(split[0].mean()) > 1e-4


def test_digits_unit_and_none_ranges():
    raw = load_digits(normalize="none")
    assert raw.train[0].min() == 0.0 and raw.train[0].max() == 1.0  # 0..16 scaled to [0, 1]
    unit = load_digits(normalize="unit", size=16)
    assert unit.train[0].min() == 0.0 and unit.train[0].max() == pytest.approx(1.0)


def test_digits_are_learnable(digits8):
    assert accuracy_of_linear_model(digits8) > 0.9


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"size": 1}, "size=1 is invalid"),
        ({"size": 8.0}, "size=8.0"),
        (
            {"normalize": "zscore"},
            "normalize='zscore' is not a known mode; accepted: none, unit, standard",
        ),
        ({"val_fraction": 1.0}, "val_fraction=1.0 is out of range; accepted: 0 <= val_fraction < 1"),
        ({"test_fraction": -0.1}, "test_fraction=-0.1"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leaves no training data"),
        ({"seed": -1}, "seed=-1 is invalid"),
        ({"seed": 1.5}, "seed=1.5"),
    ],
)
def test_digits_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        load_digits(**kwargs)
    assert fragment in str(info.value) and "digits" in str(info.value)


# -- resizing -------------------------------------------------------------------------------
def test_bilinear_resize_basics():
    rng = np.random.default_rng(0)
    x = rng.random((3, 2, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(resize_bilinear(x, 8, 8), x)
    const = np.full((2, 1, 5, 7), 3.5)
    np.testing.assert_allclose(resize_bilinear(const, 13, 4), 3.5)
    np.testing.assert_allclose(bilinear_matrix(8, 32).sum(axis=1), 1.0)
    assert resize_bilinear(x, 32, 16).shape == (3, 2, 32, 16)
    assert resize_bilinear(x, 32, 16).dtype == np.float32


def test_bilinear_resize_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).random((4, 3, 8, 8))
    for h, w in [(32, 32), (5, 11), (8, 3)]:
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(x), size=(h, w), mode="bilinear", align_corners=False
        ).numpy()
        np.testing.assert_allclose(resize_bilinear(x, h, w), expected, rtol=1e-5, atol=1e-6)


# -- synthetic ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "channels", "num_classes"), [(8, 1, 2), (16, 3, 4), (32, 1, 10), (64, 2, 6)]
)
def test_synthetic_shapes_dtypes_balance(size, channels, num_classes):
    d = load_synthetic(num_samples=600, size=size, channels=channels, num_classes=num_classes)
    assert_well_formed(d, (channels, size, size), num_classes)
    assert d.classes == list(PATTERNS)[:num_classes]
    labels = np.concatenate([d.train[1], d.val[1], d.test[1]])
    counts = np.bincount(labels, minlength=num_classes)
    assert counts.max() - counts.min() <= 1  # balanced
    assert_stratified(d)
    assert d.sizes() == {"train": 420, "val": 60, "test": 120}


def test_synthetic_binary_case():
    d = load_synthetic(num_samples=100, num_classes=2)
    assert set(np.unique(d.train[1])) == {0, 1}
    assert d.classes == ["horizontal_bar", "vertical_bar"]


def test_synthetic_is_deterministic_per_seed():
    a = load_synthetic(num_samples=500, size=16, channels=3, seed=3)
    assert_same(a, load_synthetic(num_samples=500, size=16, channels=3, seed=3))
    b = load_synthetic(num_samples=500, size=16, channels=3, seed=4)
    assert not np.array_equal(a.train[0], b.train[0])
    assert not np.array_equal(a.test[1], b.test[1])


def test_synthetic_noise_free_images_are_shapes_on_black():
    d = load_synthetic(num_samples=200, size=16, noise=0.0, num_classes=10)
    x = d.train[0]
    assert x.min() == 0.0 and x.max() <= 1.0
    on = (x > 0).mean(axis=(1, 2, 3))
    assert on.min() > 0.01 and on.max() < 0.7  # every image shows a shape, none fills it


def test_synthetic_noise_level():
    d = load_synthetic(num_samples=200, size=32, noise=0.3, num_classes=2)
    clean = load_synthetic(num_samples=200, size=32, noise=0.0, num_classes=2)
    residual = d.train[0] - clean.train[0]
    assert residual.std() == pytest.approx(0.3, rel=0.02)
    assert abs(residual.mean()) < 0.01


def test_synthetic_colour_is_a_random_tint():
    d = load_synthetic(num_samples=200, size=16, channels=3, noise=0.0)
    x = d.train[0]
    peak = x.max(axis=(2, 3))  # per image and channel
    assert not np.allclose(peak[:, 0], peak[:, 1])
    # The shape is the same in every channel: only its brightness differs.
    mask = x > 0
    np.testing.assert_array_equal(mask[:, 0], mask[:, 1])


@pytest.mark.parametrize(
    ("size", "num_classes", "threshold"), [(8, 4, 0.7), (32, 4, 0.7), (16, 10, 0.5)]
)
def test_synthetic_is_learnable(size, num_classes, threshold):
    d = load_synthetic(num_samples=1500, size=size, num_classes=num_classes)
    assert accuracy_of_linear_model(d) > threshold  # chance is 1 / num_classes


def test_synthetic_threads_do_not_change_the_numbers(monkeypatch):
    import cnnx.data.synthetic as synthetic

    a = load_synthetic(num_samples=3000, size=32, channels=2, num_classes=10)
    monkeypatch.setattr(synthetic, "MAX_THREADS", 1)
    assert_same(a, load_synthetic(num_samples=3000, size=32, channels=2, num_classes=10))


@pytest.mark.slow
def test_synthetic_scales_to_100k_images_of_64x64():
    # Scale is about memory and dtype discipline (a float64 intermediate would need 3.3 GB);
    # how fast it generates is a benchmark's business, not a test's.
    d = load_synthetic(num_samples=100_000, size=64, num_classes=10)
    assert d.sizes() == {"train": 70_000, "val": 10_000, "test": 20_000}
    assert d.train[0].shape == (70_000, 1, 64, 64) and d.train[0].dtype == np.float32
    assert np.bincount(d.test[1], minlength=10).min() > 1_500


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_classes": 1}, "num_classes=1 is invalid; accepted: an integer in [2, 10]"),
        ({"num_classes": 11}, "num_classes=11"),
        ({"size": 4}, "size=4 is invalid; accepted: an integer >= 8"),
        ({"channels": 0}, "channels=0"),
        ({"noise": -0.1}, "noise=-0.1"),
        ({"num_samples": 1}, "num_samples=1"),
        ({"num_samples": 10.5}, "num_samples=10.5"),
        ({"test_fraction": 1.2}, "test_fraction=1.2"),
    ],
)
def test_synthetic_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        load_synthetic(**kwargs)
    assert fragment in str(info.value) and "synthetic" in str(info.value)


def test_synthetic_too_small_to_stratify():
    # Raising both fractions until each split holds 4 would leave 2 training samples.
    with pytest.raises(DataError, match=r"10 samples give a val split of 1 \(val_fraction=0.1\) and a test split "
                                        r"of 2 \(test_fraction=0.2\), fewer than the 4 classes; .*: set "
                                        r"val_fraction and test_fraction to 0, or add samples$"):
        load_synthetic(num_samples=10, num_classes=4)


# -- splitting ------------------------------------------------------------------------------
def test_stratified_split_partitions_the_data():
    y = np.repeat(np.arange(3), [50, 30, 20])
    x = np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1)
    (xt, yt), (xv, yv), (xs, ys) = stratified_split(x, y, 0.1, 0.2, seed=7)
    assert (len(yt), len(yv), len(ys)) == (70, 10, 20)
    ids = np.concatenate([xt, xv, xs]).ravel().astype(int)
    assert sorted(ids) == list(range(100))  # disjoint and complete
    np.testing.assert_array_equal(np.bincount(ys), [10, 6, 4])
    np.testing.assert_array_equal(np.bincount(yv), [5, 3, 2])
    np.testing.assert_array_equal(y[ids], np.concatenate([yt, yv, ys]))  # rows stay paired


def test_stratified_indices_zero_fractions_and_seeds():
    y = np.arange(40) % 2
    train, val, test = stratified_indices(y, 0.0, 0.0, seed=0)
    assert len(train) == 40 and len(val) == len(test) == 0
    a = stratified_indices(y, 0.25, 0.25, seed=0)
    b = stratified_indices(y, 0.25, 0.25, seed=0)
    c = stratified_indices(y, 0.25, 0.25, seed=1)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[2], c[2])


def test_split_with_a_singleton_class_is_a_data_error():
    y = np.array([0] * 20 + [1])
    with pytest.raises(DataError, match=r"^dataset toy: class 1 has 1 sample, too few to split with "
                                        r"val_fraction=0.1 and test_fraction=0.2; each class needs at least 3 "):
        stratified_indices(y, 0.1, 0.2, seed=0, source="dataset toy")


@pytest.mark.parametrize(("count", "val", "test", "needed"), [
    (2, 0.1, 0.2, 3), (1, 0.1, 0.0, 2), (1, 0.0, 0.2, 2), (3, 0.1, 0.6, 6)])
def test_a_class_too_small_to_split_is_named_with_what_it_needs(count, val, test, needed):
    """Before: sklearn's "The least populated classes in y have only 1 member ... Classes with
    too few members are: [2]", a label number and a count of the split's remainder."""
    y = np.array([0] * 20 + [1] * 20 + [2] * count)
    with pytest.raises(DataError) as info:
        stratified_indices(y, val, test, seed=0, source="dataset toy", classes=["cat", "dog", "rare"])
    assert str(info.value) == (
        f"dataset toy: class 'rare' has {count} sample{'s' if count > 1 else ''}, too few to split with "
        f"val_fraction={val} and test_fraction={test}; each class needs at least {needed} (add samples to it, "
        f"remove it, or set the fractions lower or to 0)")
    y = np.array([0] * 20 + [1] * 20 + [2] * needed)
    stratified_indices(y, val, test, seed=0, classes=["cat", "dog", "rare"])  # enough, whatever the seed
    stratified_indices(y, val, test, seed=1, classes=["cat", "dog", "rare"])


@pytest.mark.parametrize(("n", "val", "test", "message"), [
    # ceil(0.1 · 12) = 2 val samples for 3 classes; the test split's 3 are enough. sklearn's
    # "The test_size = 2 should be greater or equal to the number of classes = 3" blamed the test.
    (12, 0.1, 0.2, "12 samples give a val split of 2 (val_fraction=0.1), fewer than the 3 classes; a stratified "
                   "split needs a sample of each class: set val_fraction to at least 0.25 or to 0"),
    (12, 0.0, 0.1, "12 samples give a test split of 2 (test_fraction=0.1), fewer than the 3 classes; a "
                   "stratified split needs a sample of each class: set test_fraction to at least 0.25 or to 0"),
    (24, 0.05, 0.05, "24 samples give a val split of 2 (val_fraction=0.05) and a test split of 2 "
                     "(test_fraction=0.05), fewer than the 3 classes; a stratified split needs a sample of each "
                     "class: set val_fraction and test_fraction to at least 0.13 or to 0"),
    (6, 0.0, 0.6, "val_fraction=0.0 and test_fraction=0.6 leave 2 of 6 samples for the train split, fewer than "
                  "the 3 classes; a stratified split needs a sample of each class: set the fractions lower"),
])
def test_a_split_smaller_than_the_class_count_is_named_with_its_own_key(n, val, test, message):
    y = np.arange(n) % 3
    with pytest.raises(DataError) as info:
        stratified_indices(y, val, test, seed=0, source="dataset toy")
    assert str(info.value) == f"dataset toy: {message}"


def test_data_splits_rejects_inconsistent_shapes():
    ok = (np.zeros((2, 1, 4, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(DataError, match="val split"):
        DataSplits(
            ok,
            (np.zeros((2, 1, 5, 5), np.float32), np.zeros(2, np.int64)),
            ok,
            ["a", "b"],
            (1, 4, 4),
            "toy",
        )


@pytest.mark.parametrize(("val", "described"), [
    (([[0.0] * 16] * 2, [0, 1]), r"val split of tuple \(list, list\)"),
    ((np.zeros((2, 1, 4, 4), np.float32),), r"val split of tuple \(ndarray\)"),
    (np.zeros((2, 1, 4, 4), np.float32), "val split of ndarray"),
])
def test_data_splits_names_a_split_that_is_not_a_pair_of_arrays(val, described):
    ok = (np.zeros((2, 1, 4, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(DataError, match=rf"dataset 'toy' returned a {described}; expected a pair \(x, y\) of NumPy"):
        DataSplits(ok, val, ok, ["a", "b"], (1, 4, 4), "toy")


# -- validation helper ----------------------------------------------------------------------
def test_check_dataset_converts_without_copying_float32():
    x = np.zeros((4, 1, 2, 2), np.float32)
    y = np.array([0, 1, 0, 1])
    x2, y2 = check_dataset(x, y, "toy")
    assert x2 is x and y2.dtype == np.int64
    x3, y3 = check_dataset(x.astype(np.uint8), np.array([0.0, 1.0, 1.0, 0.0]), "toy")
    assert x3.dtype == np.float32 and y3.dtype == np.int64
    _, y4 = check_dataset(x, y[:, None], "toy")  # a column vector of labels
    assert y4.shape == (4,)


@pytest.mark.parametrize(
    ("x", "y", "fragment"),
    [
        (np.zeros((0, 1, 2, 2)), np.zeros(0, int), "x is empty"),
        (np.zeros((3, 1, 2, 2)), np.array([0, 1]), "x has 3 samples but y has 2 labels"),
        (np.full((2, 1, 2, 2), np.nan), np.array([0, 1]), "x contains 8 NaN or infinite values"),
        (
            np.array([np.inf, 0, 0, 0]).reshape(1, 1, 2, 2).repeat(2, 0),
            np.array([0, 1]),
            "2 NaN or infinite",
        ),
        (np.full((2, 1, 2, 2), 1e39), np.array([0, 1]), "beyond float32 range"),
        (np.zeros((2, 1, 2, 2)), np.array([0.0, 0.5]), "non-integer labels such as 0.5"),
        (np.zeros((2, 1, 2, 2)), np.array([0.0, np.nan]), "non-integer labels"),
        (np.zeros((2, 1, 2, 2)), np.array(["cat", "dog"]), "y has dtype <U3"),
        (np.zeros((2, 1, 2, 2)), np.array([1, 1]), "a single class (1)"),
        (np.zeros((2, 1, 2, 2)), np.array([-1, 1]), "negative label -1"),
        (np.zeros((2, 1, 2, 2)), np.array([[0, 1], [1, 0]]), "y has shape (2, 2)"),
        (np.zeros((2, 4)), np.array([0, 1]), "x has shape (2, 4); expected 4 dimensions"),
        (np.array([["a"]] * 2), np.array([0, 1]), "x has dtype <U1"),
    ],
)
def test_check_dataset_errors(x, y, fragment):
    with pytest.raises(DataError) as info:
        check_dataset(x, y, "dataset 'toy'")
    message = str(info.value)
    assert message.startswith("dataset 'toy': ") and fragment in message and "\n" not in message


# -- npz ------------------------------------------------------------------------------------
def make_images(n=60, shape=(1, 6, 6), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = (rng.random((n, *shape)) + y[:, None, None, None]).astype(np.float32)
    return x, y


def test_npz_feature_maps_that_look_channels_last_are_taken_as_nchw_when_the_layout_says_so(tmp_path):
    # (N, 16, 4, 4): 16 channels of 4×4, or 16×4 images of 4 channels; only the user knows.
    x, y = make_images(shape=(16, 4, 4))
    np.savez(tmp_path / "maps.npz", x=x, y=y)
    with pytest.raises(DataError, match=r"looks channels-last .* or dataset.layout=nchw if it holds 16 channels"):
        load_npz(tmp_path / "maps.npz")
    assert load_npz(tmp_path / "maps.npz", layout="nchw").input_shape == (16, 4, 4)
    assert load_npz(tmp_path / "maps.npz", layout="nhwc").input_shape == (4, 16, 4)


def test_npz_nchw_round_trip(tmp_path):
    x, y = make_images(shape=(3, 5, 7))
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    d = load_npz(tmp_path / "mine.npz")
    assert_well_formed(d, (3, 5, 7), 3)
    assert d.name == "npz:mine.npz" and d.classes == ["0", "1", "2"]
    assert d.sizes() == {"train": 42, "val": 6, "test": 12}
    assert_stratified(d)
    # Rows are untouched (normalize="none") and still paired with their labels.
    for xs, ys in (d.train, d.val, d.test):
        for img, label in zip(xs, ys, strict=True):
            match = np.flatnonzero((x == img).all(axis=(1, 2, 3)))
            assert len(match) == 1 and y[match[0]] == label
    assert_same(d, load_npz(str(tmp_path / "mine.npz")))
    assert not np.array_equal(load_npz(tmp_path / "mine.npz", seed=5).test[1], d.test[1])


def test_npz_grayscale_float_labels_and_class_names(tmp_path):
    x, y = make_images()
    np.savez_compressed(
        tmp_path / "gray.npz",
        x=x[:, 0].astype(np.float64),
        y=y.astype(np.float32),
        classes=np.array(["cat", "dog", "emu"]),
    )
    d = load_npz(tmp_path / "gray.npz", val_fraction=0.0, test_fraction=0.5)
    assert_well_formed(d, (1, 6, 6), 3)
    assert d.classes == ["cat", "dog", "emu"]
    assert len(d.val[0]) == 0 and len(d.test[0]) == 30


def test_npz_standard_normalisation_uses_train_only(tmp_path):
    x, y = make_images(n=90, shape=(2, 4, 4))
    x[:, 1] *= 10
    np.savez(tmp_path / "n.npz", x=x, y=y)
    raw = load_npz(tmp_path / "n.npz")
    d = load_npz(tmp_path / "n.npz", normalize="standard")
    mean = raw.train[0].astype(np.float64).mean(axis=(0, 2, 3))
    std = raw.train[0].astype(np.float64).std(axis=(0, 2, 3))
    np.testing.assert_allclose(d.normalization["shift"], mean, rtol=1e-6)
    np.testing.assert_allclose(d.train[0].mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(d.train[0].std(axis=(0, 2, 3)), 1, atol=1e-5)
    expected = (raw.test[0] - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(d.test[0], expected, rtol=1e-5, atol=1e-5)
    unit = load_npz(tmp_path / "n.npz", normalize="unit")
    assert unit.train[0].min() == 0.0 and unit.train[0].max() == pytest.approx(1.0)


def test_npz_with_its_own_splits(tmp_path):
    x, y = make_images(n=90)
    np.savez(tmp_path / "s.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    d = load_npz(tmp_path / "s.npz", val_fraction=0.25, test_fraction=0.5)
    np.testing.assert_array_equal(d.test[0], x[60:])  # test kept as given, test_fraction ignored
    assert d.sizes() == {"train": 45, "val": 15, "test": 30}
    np.savez(
        tmp_path / "v.npz",
        x_train=x[:60],
        y_train=y[:60],
        x_val=x[60:70],
        y_val=y[60:70],
        x_test=x[70:],
        y_test=y[70:],
    )
    d = load_npz(tmp_path / "v.npz")
    assert d.sizes() == {"train": 60, "val": 10, "test": 20}
    np.testing.assert_array_equal(d.val[1], y[60:70])


@pytest.mark.parametrize(("pixels", "warned"), [
    (np.uint8, "x holds uint8 pixels (up to 255)"),
    # What np.asarray(image, np.float32) gives: it trained to a collapse without a word.
    (np.float32, "x holds float32 pixels (up to 255)"),
])
def test_npz_pixels_of_0_to_255_get_a_warning_whatever_their_dtype(tmp_path, capsys, pixels, warned):
    x, y = make_images(n=40)
    np.savez(tmp_path / "p.npz", x=(x / x.max() * 255).round().astype(pixels), y=y)
    load_npz(tmp_path / "p.npz")
    err = capsys.readouterr().err
    assert err == (f"cnnx: warning: npz file '{tmp_path / 'p.npz'}': {warned}, used as they are with "
                   f"dataset.normalize=none; set dataset.normalize=unit to scale them to [0, 1] (or standard)\n")
    load_npz(tmp_path / "p.npz", normalize="unit")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("pixels", [
    lambda x: x / x.max() * 1.05,  # [0, 1] resampled, with overshoot
    lambda x: (x - x.mean()) / x.std(),  # already standardised
])
def test_npz_float_pixels_on_a_unit_scale_get_no_warning(tmp_path, capsys, pixels):
    x, y = make_images(n=40)
    np.savez(tmp_path / "p.npz", x=pixels(x).astype(np.float32), y=y)
    load_npz(tmp_path / "p.npz")
    assert capsys.readouterr().err == ""


def test_npz_held_out_splits_on_another_scale_than_training_get_a_warning(tmp_path, capsys):
    x, y = make_images(n=90)
    unit = (x / x.max()).astype(np.float32)
    bytes_ = (unit * 255).round().astype(np.uint8)
    np.savez(tmp_path / "t.npz", x_train=unit[:60], y_train=y[:60], x_test=bytes_[60:], y_test=y[60:])
    load_npz(tmp_path / "t.npz", normalize="standard")
    assert capsys.readouterr().err == (
        f"cnnx: warning: npz file '{tmp_path / 't.npz'}': x_test spans [{bytes_[60:].min()}, {bytes_[60:].max()}], "
        f"but x_train spans [{unit[:60].min():.4g}, {unit[:60].max():.4g}]; a split on another scale than training "
        f"is scored on inputs the model never saw: save every split on the same scale\n")
    # The other way round: a [0, 1] val split beside 0–255 training images; the training
    # images' own scale gets its warning (normalize=none), the val split's its own.
    np.savez(tmp_path / "v.npz", x_train=bytes_[:60], y_train=y[:60], x_val=unit[60:70], y_val=y[60:70],
             x_test=bytes_[70:], y_test=y[70:])
    load_npz(tmp_path / "v.npz")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "x_train holds uint8 pixels" in lines[0], lines
    assert ": x_val spans [" in lines[1] and "but x_train spans [" in lines[1], lines
    np.savez(tmp_path / "same.npz", x_train=unit[:60], y_train=y[:60], x_test=unit[60:], y_test=y[60:])
    load_npz(tmp_path / "same.npz")
    assert capsys.readouterr().err == ""


def write_npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


X, Y = make_images()
NPZ_ERRORS = [
    (lambda p: p / "nowhere.npz", "not found"),
    (lambda p: p, "is a directory"),
    (
        lambda p: _write_bytes(p / "junk.npz", b"this is not a zip file"),
        "not a readable .npz archive",
    ),
    (lambda p: _truncated(p), "bad.npz"),
    (lambda p: _npy(p), "holds a single array (.npy format)"),
    (
        lambda p: write_npz(p, images=X, labels=Y),
        "missing arrays 'x' and 'y'; found 'images', 'labels'",
    ),
    (lambda p: write_npz(p, x=X), "missing array 'y'; found 'x'"),
    (lambda p: write_npz(p, x=X, y=Y[:-1]), "x has 60 samples but y has 59 labels"),
    (
        lambda p: write_npz(p, x=X[:, 0, 0], y=Y),
        "'x' has shape (60, 6); expected (N, C, H, W) or (N, H, W)",
    ),
    (lambda p: write_npz(p, x=X[:, None], y=Y), "has shape (60, 1, 1, 6, 6)"),
    (
        lambda p: write_npz(p, x=np.where(np.arange(60)[:, None, None, None] == 3, np.nan, X), y=Y),
        "NaN or infinite",
    ),
    (lambda p: write_npz(p, x=X * np.inf, y=Y), "NaN or infinite"),
    (lambda p: write_npz(p, x=X, y=Y + 0.5), "non-integer labels such as 0.5"),
    (lambda p: write_npz(p, x=X, y=np.array([f"c{v}" for v in Y])),
     "array 'y' holds strings such as 'c0'; expected integer class indices 0..K-1: names, y = "
     "np.unique(y, return_inverse=True), then save y=y and classes=names.astype(str)"),
    # Labels that are not 0..K-1 trained outputs for classes that do not exist.
    (lambda p: write_npz(p, x=X, y=Y + 1), "labels are 1..3, which leaves class 0 without a sample; labels must "
                                           "be 0..K-1: names, y = np.unique(y, return_inverse=True)"),
    (lambda p: write_npz(p, x=X, y=np.where(Y == 0, 3, 7)), "labels are 3, 7, which leaves classes 0..2, 4..6 "
                                                             "without a sample; labels must be 0..K-1"),
    (lambda p: write_npz(p, x_train=X, y_train=Y * 2, x_test=X, y_test=Y * 2),
     "labels are 0, 2, 4, which leaves classes 1, 3 without a sample; labels must be 0..K-1: names, y = "
     "np.unique(y, return_inverse=True), then save y=y and classes=names.astype(str) (over every split's labels "
     "at once)"),
    (lambda p: write_npz(p, x=X, y=np.zeros(60, int)), "single class"),
    (lambda p: write_npz(p, x=X[:0], y=Y[:0]), "x is empty"),
    (lambda p: write_npz(p, x=X, y=np.array([object()] * 60)), "need pickle"),
    (
        lambda p: write_npz(p, x=X, y=Y, classes=np.array(["a", "b"])),
        "names 2 classes but labels go up to 2",
    ),
    (
        lambda p: write_npz(p, x=X, y=Y, classes=np.arange(3)),
        "'classes' has shape (3,) and dtype int64",
    ),
    # two outputs under one name: the data line, predictions and accuracy merged them
    (lambda p: write_npz(p, x=X, y=Y, classes=np.array(["a", "b", "a"])), "array 'classes' names 'a' more than once"),
    # a list of str saved as is: the advice was to save numeric arrays
    (lambda p: write_npz(p, x=X, y=Y, classes=np.array(["a", "b", "c"], dtype=object)),
     "array 'classes' is stored as Python objects, which need pickle (disabled: loading it could run code); save it "
     "as strings: classes=np.array(names).astype(str)"),
    (
        lambda p: write_npz(p, x_train=X, y_train=Y, x_test=X[:, :, :5], y_test=Y),
        "splits have different image shapes",
    ),
    (
        lambda p: write_npz(p, x_train=X, y_train=Y, x_test=X, y_test=Y[:3]),
        "('x_test', 'y_test'): x has 60 samples",
    ),
]


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


def _truncated(tmp_path):
    path = write_npz(tmp_path, x=X, y=Y)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _npy(tmp_path):
    path = tmp_path / "arr.npz"
    with open(path, "wb") as f:
        np.save(f, X)
    return path


@pytest.mark.parametrize(("make", "fragment"), NPZ_ERRORS, ids=[f for _, f in NPZ_ERRORS])
def test_npz_data_errors(tmp_path, make, fragment):
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        load_npz(path)
    message = str(info.value)
    assert fragment in message
    assert str(path.resolve()) in message  # names the file
    assert "\n" not in message


def test_npz_config_errors(tmp_path):
    path = write_npz(tmp_path, x=X, y=Y)
    with pytest.raises(ConfigError, match="normalize='minmax'"):
        load_npz(path, normalize="minmax")
    with pytest.raises(ConfigError, match="val_fraction=-1"):
        load_npz(path, val_fraction=-1)


def test_data_splits_describe_and_params_for_any_dataset():
    def split(labels):
        y = np.asarray(labels, dtype=np.int64)
        return np.zeros((len(y), 1, 2, 2), np.float32), y

    few = DataSplits(split([0, 0, 1, 1, 1]), split([0, 1]), split([]), ["cat", "dog"], (1, 2, 2), "npz:pets.npz")
    assert few.describe() == ("data: npz:pets.npz: 2 classes, 7 images (train 5, val 2, test 0); "
                              "per class: cat 3, dog 4")
    assert few.params() == {"data.num_classes": "2", "data.train_size": "5", "data.val_size": "2",
                            "data.test_size": "0", "data.skipped_files": "0"}
    many = DataSplits(split([*range(12), 5, 5, 5]), split([]), split([]), [f"c{i}" for i in range(12)],
                      (1, 2, 2), "synthetic", skipped=["x.bmp: not read"])
    assert many.describe() == ("data: synthetic: 12 classes, 15 images (train 15, val 0, test 0); "
                               "per class: fewest class c0: 1, most class c5: 4; skipped 1 file (e.g. x.bmp: not read)")
    # Numbered classes: "0 (10) to 40 (0)" read as "class 0 has 10".
    numbered = DataSplits(split([0] * 40 + [*range(1, 10)] * 10 + [11]), split([]), split([]),
                          [str(i) for i in range(12)], (1, 2, 2), "npz:twelve.npz")
    assert numbered.describe().endswith("per class: fewest class 10: 0, most class 0: 40")


def _labelled(labels):
    y = np.asarray(labels, dtype=np.int64)
    return np.zeros((len(y), 1, 2, 2), np.float32), y


@pytest.mark.parametrize(("classes", "test", "lacking"), [
    # Only in the file's own test split: it was trained on 9 classes and scored on 10.
    (["0", "1", "2"], [0, 1, 2, 2], "class '2' (2 in test)"),
    # Named by a classes array, with no sample anywhere.
    (["cat", "dog", "emu", "yak"], [0, 1], "classes 'emu', 'yak' (nor does val or test)"),
])
def test_a_class_missing_from_the_train_split_is_refused(classes, test, lacking):
    data = DataSplits(_labelled([0, 0, 1, 1]), _labelled([]), _labelled(test), classes, (1, 2, 2), "npz:mine.npz")
    with pytest.raises(DataError) as info:
        check_loaded(data, "dataset 'npz'")
    assert str(info.value) == (
        f"data npz:mine.npz: the train split holds no samples of {lacking}; a model cannot learn a class it "
        f"never trains on: add training samples of it, or leave it out and number the labels 0..K-1")


def test_a_class_missing_from_a_held_out_split_gets_a_warning(tmp_path, capsys):
    # A class of 2 images passes the split check; stratification puts both in train on any seed.
    x, _ = make_images(n=357)
    y = np.repeat([0, 1, 2], [178, 2, 177])
    np.savez(tmp_path / "rare.npz", x=x / x.max(), y=y)
    for seed in (0, 1):
        data = check_loaded(load_npz(tmp_path / "rare.npz", seed=seed), "dataset 'npz'")
        assert np.bincount(data.train[1])[1] == 2
        assert capsys.readouterr().err.splitlines() == [
            f"cnnx: warning: data npz:rare.npz: the {split} split holds no samples of class '1' (2 in train); "
            f"the {split} metrics never see it: add samples of it" for split in ("val", "test")]
    # No val split asked for: nothing to warn of.
    check_loaded(load_npz(tmp_path / "rare.npz", val_fraction=0, test_fraction=0), "dataset 'npz'")
    assert capsys.readouterr().err == ""


def test_a_size_whose_arrays_cannot_fit_in_memory_is_refused_before_they_are_made():
    """dataset.size=1000 on digits (29 GB) was ended by the OOM killer, without a word."""
    from cnnx.data.memory import available_memory

    available = available_memory()
    if available is None:
        pytest.skip("this system does not say how much memory is available")
    too_large = 2 * int((available / (1797 * 16)) ** 0.5) + 2
    with pytest.raises(ConfigError, match=rf"^dataset.size={too_large} needs about .* GB to prepare 1797 digits "
                                          rf"at {too_large}×{too_large}; .* GB are available to this process"):
        load_digits(size=too_large)


def test_a_containers_memory_limit_bounds_the_memory_available(tmp_path, monkeypatch):
    """In a container the host's MemAvailable ignores the container's limit, whose OOM killer
    then ends the run all the same; the limit may sit on a parent of the process's own cgroup,
    and reclaimable page cache is no use to count."""
    from cnnx.data import memory

    own = tmp_path / "init.scope"
    own.mkdir()
    (tmp_path / "memory.max").write_text("1000000\n")
    (tmp_path / "memory.current").write_text("900000\n")
    (tmp_path / "memory.stat").write_text("anon 400000\ninactive_file 500000\n")
    (own / "memory.max").write_text("max\n")
    (own / "memory.current").write_text("300000\n")
    files = ((str(tmp_path), "memory.max", "memory.current", "memory.stat", "inactive_file", ""),)
    monkeypatch.setattr(memory, "_CGROUP_FILES", files)
    monkeypatch.setattr(memory, "_own_cgroup", lambda controller: "/init.scope")
    assert memory.available_memory() == 600000  # the parent's 1 000 000 − (900 000 − 500 000 of page cache)
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.available_memory() == memory._system_available()
