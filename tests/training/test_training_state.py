"""A trainer's state put back from a capture: all of it, or — when part of it does not fit —
none of it, as ``restore`` promises."""

import copy

import numpy as np
import pytest

import cnnx
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
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
