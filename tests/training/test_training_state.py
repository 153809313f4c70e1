"""A trainer's state put back from a capture: all of it, or — when part of it does not fit —
none of it, as ``restore`` promises."""

import copy

import numpy as np
import pytest

import cnnx
from cnnx.engine.layers.dense import Dense
from cnnx.engine.layers.flatten import Flatten
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.model import Model
from cnnx.engine.module import Module
from cnnx.engine.optim.schedulers import StepLR
from cnnx.engine.optim.sgd import SGD
from cnnx.errors import CheckpointError
from cnnx.training.trainer import Trainer
from cnnx.training.training_state import capture, restore

SPEC = {"f": {"type": "flatten"}, "drop": {"type": "dropout", "p": 0.5}, "d": {"type": "dense", "out_features": 3}}


def make() -> Trainer:
    model = cnnx.build_model(SPEC, (1, 4, 4), seed=0)
    optimizer = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    return Trainer(model, CrossEntropyLoss(), optimizer, epochs=3, batch_size=4, seed=0,
                   scheduler=StepLR(optimizer, step_size=1, gamma=0.5), progress=False, log=lambda _: None)


def trained() -> Trainer:
    trainer = make()
    x = np.random.default_rng(0).standard_normal((8, 1, 4, 4)).astype(np.float32)
    for _ in range(3):
        _, grad = trainer.loss(trainer.model.forward(x), np.arange(8) % 3)
        trainer.model.backward(grad)
        trainer.optimizer.step()
        trainer.scheduler.step()
    trainer.shuffle_rng.random(), trainer.augment_rng.random()
    return trainer


def everything(trainer: Trainer) -> dict:
    arrays, header = capture(trainer)
    return {"arrays": {k: v.copy() for k, v in arrays.items()}, "optimizer": header["optimizer"],
            "scheduler": header["scheduler"], "rng": header["rng"]}


@pytest.mark.parametrize("corrupt", ["scheduler", "augment rng", "layer rng"])
def test_a_restore_that_fails_part_way_leaves_the_trainer_as_built(corrupt):
    """Only the model was put back: the optimizer kept the checkpoint's step and lr (0 → 3,
    0.1 → 0.0125) and the generators restored before the failure stayed restored."""
    arrays, header = capture(trained())
    header = copy.deepcopy(header)
    if corrupt == "scheduler":
        header["scheduler"]["base_lr"] = -1.0
    elif corrupt == "augment rng":
        header["rng"]["augment"] = {"bit_generator": "PCG64", "state": "not a state"}
    else:
        (name,) = header["rng"]["layers"]
        header["rng"]["layers"][name] = {"bit_generator": "PCG64", "state": "not a state"}
    fresh = make()
    built = everything(fresh)
    with pytest.raises(CheckpointError):
        restore(fresh, arrays, header, "ckpt")
    after = everything(fresh)
    assert after["optimizer"] == built["optimizer"] and after["scheduler"] == built["scheduler"]
    assert after["rng"] == built["rng"]
    for key, value in built["arrays"].items():
        np.testing.assert_array_equal(after["arrays"][key], value, err_msg=key)


class Noise(Module):
    """A plugin's stochastic layer keeping its generator under a name of its own."""

    def _build(self, input_shape, rng):
        self._noise = rng.spawn(1)[0]
        return input_shape

    def forward(self, x, training=True):
        return x + self._noise.standard_normal(x.shape, dtype=np.float32) if training else x

    def backward(self, grad_output):
        return grad_output


def test_a_layers_generator_is_checkpointed_whatever_attribute_holds_it():
    """Only an attribute named `rng` was saved: a resumed run drew other noise than the
    uninterrupted one, without a word."""
    def noisy() -> Trainer:
        model = Model({"noise": Noise(), "f": Flatten(), "d": Dense(3)}, (1, 4, 4), np.random.default_rng(0))
        return Trainer(model, CrossEntropyLoss(), SGD(model.named_parameters(), lr=0.1), epochs=1,
                       batch_size=4, seed=0, progress=False, log=lambda _: None)

    trainer = noisy()
    trainer.model.layers["noise"]._noise.random(5)
    arrays, header = capture(trainer)
    expected = trainer.model.layers["noise"]._noise.random(3)
    resumed = noisy()
    restore(resumed, arrays, header, "ckpt")
    np.testing.assert_array_equal(resumed.model.layers["noise"]._noise.random(3), expected)


def test_a_checkpoint_written_before_plugin_generators_were_saved_still_resumes_and_says_so():
    """cnnx 0.2.0 saved only generators named `rng`: its checkpoint of a model with a plugin's
    `_noise` generator was refused as "written for a different architecture"."""
    def noisy(lines) -> Trainer:
        model = Model({"noise": Noise(), "f": Flatten(), "d": Dense(3)}, (1, 4, 4), np.random.default_rng(0))
        return Trainer(model, CrossEntropyLoss(), SGD(model.named_parameters(), lr=0.1), epochs=1,
                       batch_size=4, seed=0, progress=False, log=lines.append)

    arrays, header = capture(noisy([]))
    del header["rng"]["layers"]["noise:_noise"]  # as 0.2.0 wrote it
    lines = []
    restore(noisy(lines), arrays, header, "ckpt")
    assert lines == ["ckpt holds no state of the generators noise:_noise (cnnx 0.2.0 saved only those named rng): "
                     "they start afresh, so their draws differ from an uninterrupted run's"]
