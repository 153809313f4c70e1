"""An epoch's figures: train figures are means over its samples, not over its batches, and
accuracy counts the labels the loss implies."""

import numpy as np
import pytest

from cnnx.data.splits import DataSplits
from cnnx.engine.losses.bce import BCELoss
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.model import build_model
from cnnx.engine.optim.sgd import SGD
from cnnx.training.metrics import evaluate
from cnnx.training.trainer import Trainer

SAMPLES, BATCH = 20, 8  # batches of 8, 8 and 4: a batch mean would weigh the last one double


class RecordingLoss(CrossEntropyLoss):
    """The real cross-entropy, keeping (value, batch size) of every call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def compute(self, outputs, targets):
        value, grad = super().compute(outputs, targets)
        self.calls.append((value, len(outputs)))
        return value, grad


def test_train_loss_is_the_sample_weighted_mean_of_the_batch_losses():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, 1, 4, 4)).astype(np.float32)
    y = np.arange(SAMPLES) % 3
    data = DataSplits(train=(x, y), val=(x[:5], y[:5]), test=(x[:5], y[:5]), classes=["a", "b", "c"],
                      input_shape=(1, 4, 4), name="t")
    model = build_model({"flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 3}}, (1, 4, 4), seed=0)
    loss = RecordingLoss()
    trainer = Trainer(model, loss, SGD(model.named_parameters(), lr=0.5), epochs=1, batch_size=BATCH, seed=0,
                      progress=False, log=lambda _: None)
    history = trainer.fit(data)
    # The training batches come first; the val and test evaluations follow them.
    batches = loss.calls[:3]
    assert [size for _, size in batches] == [8, 8, 4]
    expected = sum(value * size for value, size in batches) / SAMPLES
    assert history.epochs[0]["train_loss"] == pytest.approx(expected, rel=1e-12)
    # Guard that the weighting is visible at all: the batch losses must differ.
    assert expected != pytest.approx(np.mean([value for value, _ in batches]), rel=1e-6)


@pytest.mark.parametrize("last", [None, "sigmoid"])
def test_a_single_output_binary_model_is_labelled_by_the_sign_of_a_logit_and_half_of_a_probability(last):
    """bce(from_logits=true) logits were thresholded at 0.5, as probabilities are: logits in
    (0, 0.5] counted as class 0, and every train/val/test accuracy of such a model was wrong."""
    layers = {"flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 1}}
    model = build_model({**layers, **({"out": {"type": last}} if last else {})}, (1, 1, 1), seed=0)
    model.load_state_dict({"fc.weight": np.ones((1, 1), np.float32), "fc.bias": np.zeros(1, np.float32)})
    x = np.array([0.2, -0.2, 3.0, -3.0, 0.0], np.float32).reshape(5, 1, 1, 1)  # the model's logits
    y = np.array([1, 0, 1, 0, 0])
    evaluation = evaluate(model, BCELoss(from_logits=last is None), x, y)
    np.testing.assert_array_equal(evaluation.labels, y)  # sigmoid(0.2) = 0.55 > 0.5 and 0.2 > 0
    assert evaluation.accuracy == 1.0
