"""The original tutorial's usage example, with only its import changed."""

import re

import numpy as np
import pytest

from cnnx.errors import ShapeError
from cnnx.tutorial import CNN


def test_tutorial_usage_example_runs_unchanged(capsys):
    # --- the tutorial's example, verbatim but for the import ---
    X = np.random.randn(4, 1, 28, 28)
    y = np.array([[1], [0], [1], [0]])  # Binary labels

    cnn = CNN(learning_rate=0.01)
    cnn.add_conv_layer(in_channels=1, out_channels=8, kernel_size=3, padding=1)
    cnn.add_pool_layer(pool_type='max', pool_size=2, stride=2)
    cnn.add_conv_layer(in_channels=8, out_channels=16, kernel_size=3, padding=1)
    cnn.add_pool_layer(pool_type='max', pool_size=2, stride=2)
    cnn.add_flatten()
    cnn.add_dense(input_size=16*7*7, output_size=64, activation='relu')
    cnn.add_dense(input_size=64, output_size=1, activation='sigmoid')

    history = cnn.fit(X, y, epochs=10)
    predictions = cnn.predict(X)
    print(f"Predictions: {predictions.flatten()}")
    # --- end of the example ---
    assert len(history) == 10 and history[-1] < history[0]
    assert predictions.shape == (4, 1) and set(np.unique(predictions)) <= {0, 1}
    assert "Epoch 10/10, Loss:" in capsys.readouterr().out


def test_tutorial_api_learns_a_separable_binary_task():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    X = rng.normal(0, 0.3, (64, 1, 8, 8)).astype(np.float32)
    X[y == 1, :, 2:6, 3:5] += 2.0  # class 1 has a bright vertical bar
    cnn = CNN(learning_rate=0.1, momentum=0.9)
    cnn.add_conv_layer(in_channels=1, out_channels=4, kernel_size=3, padding=1)
    cnn.add_pool_layer(pool_size=2, stride=2)
    cnn.add_flatten()
    cnn.add_dense(input_size=4 * 4 * 4, output_size=1, activation="sigmoid")
    cnn.fit(X, y.reshape(-1, 1), epochs=30, verbose=False, batch_size=16)
    assert (cnn.predict(X)[:, 0] == y).mean() >= 0.95


def test_declared_sizes_are_checked_against_inferred_ones():
    cnn = CNN()
    cnn.add_conv_layer(in_channels=3, out_channels=4, kernel_size=3)
    with pytest.raises(ShapeError, match="in_channels=3"):
        cnn.fit(np.zeros((2, 1, 8, 8)), np.array([[0], [1]]), epochs=1, verbose=False)


@pytest.mark.parametrize("shape, hint", [
    ((6, 8, 8, 1), ": channels last; pass x.transpose(0, 3, 1, 2)"),
    ((6, 8, 8), ": no channel axis; pass x[:, None]"),
])
@pytest.mark.parametrize("call", ["fit", "predict"])
def test_channels_last_or_channel_less_input_gets_the_models_fix(shape, hint, call):
    cnn = CNN()
    cnn.add_conv_layer(in_channels=1, out_channels=4, kernel_size=3, padding=1)
    cnn.add_pool_layer(pool_size=2, stride=2)
    cnn.add_flatten()
    cnn.add_dense(input_size=4 * 4 * 4, output_size=1, activation="sigmoid")
    X = np.zeros(shape, np.float32)
    run = {"fit": lambda: cnn.fit(X, np.arange(6) % 2, epochs=1, verbose=False), "predict": lambda: cnn.predict(X)}
    with pytest.raises(ShapeError) as error:
        run[call]()
    assert str(error.value) == (f"layer conv1 was declared with in_channels=1, so X must be shaped (N, 1, H, W), "
                                f"got {shape}{hint}")
    cnn.fit(np.zeros((6, 1, 8, 8), np.float32), np.arange(6) % 2, epochs=1, verbose=False)
    with pytest.raises(ShapeError, match=f"got {re.escape(str(shape) + hint)}$"):
        cnn.predict(X)  # once built, the model's own check says the same


@pytest.mark.parametrize("classes", [1, 3])
def test_predict_proba_gives_probabilities_for_a_model_ending_in_logits(classes):
    """It returned the last linear layer's outputs (-0.2 … 0.44 for a binary model), and
    predict() before fit() thresholded those logits at 0.5."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 1, 6, 6)).astype(np.float32)
    cnn = CNN(seed=1)
    cnn.add_conv_layer(in_channels=1, out_channels=2, kernel_size=3)
    cnn.add_flatten()
    cnn.add_dense(input_size=2 * 4 * 4, output_size=classes, activation="linear")
    logits = cnn.forward(X)
    proba = cnn.predict_proba(X)
    assert proba.shape == (16, classes) and proba.dtype == np.float32
    if classes == 1:
        np.testing.assert_allclose(proba, 1 / (1 + np.exp(-logits)), rtol=1e-6)
        np.testing.assert_array_equal(cnn.predict(X), (logits > 0).astype(int))
    else:
        np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
        np.testing.assert_array_equal(cnn.predict(X), logits.argmax(axis=1))
