"""An epoch's train figures are means over its samples, not over its batches."""

import numpy as np
import pytest

from cnnx.data.splits import DataSplits
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.model import build_model
from cnnx.engine.optim.sgd import SGD
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
