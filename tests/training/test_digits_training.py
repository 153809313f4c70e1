"""The engine learns: the issue's digits CNN, plain Python (no Hydra, no MLflow)."""

import numpy as np
import pytest

import cnnx
from cnnx.bench import WORKLOADS
from cnnx.data.digits import load_digits
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.optim.schedulers import CosineLR
from cnnx.engine.optim.sgd import SGD
from cnnx.training.trainer import Trainer

DIGITS_CNN = WORKLOADS["digits"][1]  # the digits model, as the benchmark times it


@pytest.mark.slow
def test_digits_cnn_reaches_097_test_accuracy_within_30_epochs():
    data = load_digits(size=8, seed=0)
    model = cnnx.build_model(DIGITS_CNN, data.input_shape, seed=0)
    optimizer = SGD(model.named_parameters(), lr=0.05, momentum=0.9)
    # Measured over seeds 0-5 with this recipe: test accuracy 0.972-0.983, mean 0.976.
    trainer = Trainer(model, CrossEntropyLoss(), optimizer, epochs=30, batch_size=64, seed=0, progress=False,
                      scheduler_factory=lambda steps: CosineLR(optimizer, 30, steps), log=lambda _: None)
    history = trainer.fit(data)
    assert len(history.epochs) == 30  # nothing here stops early: every epoch trains and reports
    assert history.test["test_acc"] >= 0.97, history.test
    for _, p in model.named_parameters():
        assert p.data.dtype == np.float32


def test_training_is_bit_for_bit_reproducible_per_seed():
    data = load_digits(size=8, seed=0)

    def train(seed):
        model = cnnx.build_model(DIGITS_CNN, data.input_shape, seed=seed)
        optimizer = SGD(model.named_parameters(), lr=0.05, momentum=0.9)
        Trainer(model, CrossEntropyLoss(), optimizer, epochs=2, batch_size=64, seed=seed, max_shift=1,
                progress=False, log=lambda _: None).fit(data)
        return model.state_dict()

    first, again, other = train(1), train(1), train(2)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["fc2.weight"], other["fc2.weight"])
