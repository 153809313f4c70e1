"""A built model's layers, as a PyTorch user reaches and changes them.

Replacing a layer after the build (``model.layers["fc"] = Dense(10)``, ``model.fc = …``) was
silently half-applied: forward still ran the old head, whose parameters had left
``named_parameters``, ``state_dict`` and so the optimizer, and ``summary()`` failed. Sub-layers
read as attributes (``model.fc``, ``block.bn``), and layer objects go into residual blocks as
they go into models.
"""

import numpy as np
import pytest

import cnnx
from cnnx.engine.layers.activations import ReLU
from cnnx.engine.layers.batchnorm import BatchNorm2D
from cnnx.engine.layers.conv import Conv2D
from cnnx.engine.layers.dense import Dense
from cnnx.engine.layers.flatten import Flatten
from cnnx.engine.layers.residual import Residual
from cnnx.engine.model import Model
from cnnx.engine.module import Module

SPEC = {
    "block": {"type": "residual", "layers": {"conv": {"type": "conv2d", "out_channels": 2, "kernel_size": 3,
                                                      "padding": 1}, "bn": {"type": "batchnorm2d"}}},
    "flatten": {"type": "flatten"},
    "fc": {"type": "dense", "out_features": 3},
}


def model():
    return cnnx.build_model(SPEC, (2, 4, 4))


def test_layers_cannot_be_replaced_or_dropped_after_the_build():
    built = model()
    with pytest.raises(TypeError, match=r"^model.layers cannot change once built; to replace or add 'fc', "
                                        r"build a new model from these layers: Model\(\{\*\*model.layers, 'fc': "
                                        r"new_layer\}, input_shape\), whose other layers keep their weights$"):
        built.layers["fc"] = Dense(10)
    with pytest.raises(TypeError, match=r"^model.layers cannot change once built; to drop 'fc', build a new model without it"):
        del built.layers["fc"]
    with pytest.raises(TypeError, match=r"^Model.fc = Dense\(...\) cannot add or replace a layer: model.layers is fixed once built"):
        built.fc = Dense(10)
    assert list(built.layers) == ["block", "flatten", "fc"]
    assert built.forward(np.ones((1, 2, 4, 4))).shape == (1, 3)


def test_the_suggested_new_model_has_the_new_head_and_the_trained_body():
    built = model()
    replaced = Model({**built.layers, "fc": Dense(10)}, (2, 4, 4))
    assert replaced.forward(np.ones((1, 2, 4, 4))).shape == (1, 10)
    assert replaced.layers["block"] is built.layers["block"]
    assert dict(replaced.named_parameters())["fc.weight"].shape == (10, 32)
    assert "fc" in replaced.summary()


def test_sub_layers_read_as_attributes():
    built = model()
    assert built.fc is built.layers["fc"]
    assert built.block.bn is dict(built.named_layers())["block.bn"]
    built.train()
    built.block.bn.eval()  # the README's spelling for freezing one batchnorm
    assert not built.layers["block"].body.layers["bn"].training
    with pytest.raises(AttributeError, match=r"^'Model' object has no attribute 'head'$"):
        built.head


def test_a_childrens_own_missing_attribute_does_not_recurse():
    class Broken(Module):
        def children(self):
            yield "x", self.missing_sub_layer

    with pytest.raises(AttributeError, match="missing_sub_layer"):
        Broken().anything


def test_a_residual_body_takes_layer_objects():
    class Swish(Module):
        def forward(self, x, training=True):
            self._x = x
            return x / (1 + np.exp(-x))

    block = Residual({"fc": Dense(4), "act": Swish(), "relu": ReLU()})
    built = Model({"block": Residual({"conv": Conv2D(2, 3, padding=1), "act": Swish()}),
                   "flatten": Flatten()}, (2, 4, 4))
    assert built.forward(np.ones((1, 2, 4, 4))).shape == (1, 32)
    config = built.get_config()["layers"]["block"]
    assert config["layers"]["conv"]["type"] == "Conv2D" and config["layers"]["act"] == {"type": "Swish"}
    assert block.get_config()["layers"]["fc"]["out_features"] == 4


def test_a_float64_parameter_is_held_in_float32():
    """NumPy's default dtype made the model's outputs, predictions and state_dict float64."""
    built = model()
    built.fc.weight = cnnx.engine.parameter.Parameter(np.random.default_rng(0).standard_normal((3, 32)))
    assert built.fc.weight.data.dtype == np.float32
    assert built.forward(np.ones((1, 2, 4, 4))).dtype == np.float32
    assert built.state_dict()["fc.weight"].dtype == np.float32
    with pytest.raises(TypeError, match=r"^cannot assign a Parameter of dtype complex128 as Dense.weight; expected real"):
        built.fc.weight = cnnx.engine.parameter.Parameter(np.zeros((3, 32), complex))


def test_tied_weights_are_refused_by_the_optimizer_with_the_reason():
    """Each layer's backward replaces .grad, so a Parameter shared by two layers held one
    layer's gradient; the message advised passing it once, which trained on that."""
    from cnnx.engine.optim.sgd import SGD
    from cnnx.errors import ConfigError

    built = Model({"flatten": Flatten(), "fc1": Dense(4), "fc2": Dense(4)}, (1, 2, 2))
    built.fc2.weight = built.fc1.weight
    with pytest.raises(ConfigError, match=r"'fc2.weight' is the same Parameter as 'fc1.weight'; pass each parameter "
                                          r"once \(cnnx does not support layers sharing a Parameter: each backward "
                                          r"replaces .grad, so it would hold one layer's gradient only\)$"):
        SGD(built.named_parameters(), lr=0.1)


def test_layers_read_as_a_dict_does():
    built = model()
    assert next(reversed(built.layers)) == "fc"
    assert dict(built.layers) == {"block": built.block, "flatten": built.flatten, "fc": built.fc}
    assert "fc" in built.layers and len(built.layers) == 3
    assert next(reversed(built.layers.values())) is built.fc
    assert next(reversed(built.layers.items()))[0] == "fc"


def test_one_sample_without_its_batch_axis_is_told_to_add_it():
    with pytest.raises(Exception, match=r"got \(2, 4, 4\): one sample without its batch axis; pass x\[None\]$"):
        model().forward(np.ones((2, 4, 4)))


def test_a_state_dict_entry_numpy_cannot_read_is_named():
    torch = pytest.importorskip("torch")
    from cnnx.errors import CheckpointError

    built = model()
    state = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in built.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"^state_dict entry 'block.conv.weight' cannot become a NumPy array "
                                              r"\(.*\); convert it first, e\.g\. \{k: v\.float\(\)"):
        built.load_state_dict(state)


def test_class_probability_targets_are_refused_with_the_fix():
    from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
    from cnnx.errors import DataError

    with pytest.raises(DataError, match=r"targets shaped \(4, 3\) \(class probabilities or one-hot rows are not "
                                        r"supported: pass y.argmax\(axis=1\)\)$"):
        CrossEntropyLoss()(np.zeros((4, 3), np.float32), np.eye(3)[[0, 1, 2, 0]])


def test_a_blocks_layers_cannot_be_replaced_and_the_advice_builds_a_new_block():
    """block.bn = X was accepted and did nothing; a body's refusal advised a new model with the
    layer added at the top level, which did not build."""
    built = model()
    with pytest.raises(TypeError, match=r"^Residual.bn = BatchNorm2D\(...\) cannot add or replace a layer: "
                                        r"model.layers.block.layers is fixed once built; to replace or add 'bn', build "
                                        r"a new block from these layers, Residual\(\{\*\*block.body.layers, 'bn': "
                                        r"new_layer\}, shortcut=block.shortcut_mode, activation=block.activation\), "
                                        r"and a new model with it; the body's other layers keep their weights$"):
        built.block.bn = BatchNorm2D()
    for name, value in (("shortcut", None), ("body", built.block.body)):
        with pytest.raises(TypeError, match=rf"^Residual.{name} = .* cannot add or replace a layer"):
            setattr(built.block, name, value)
    with pytest.raises(TypeError, match=r"^model.layers.block.layers cannot change once built; to replace or add 'bn', "
                                        r"build a new block"):
        built.block.body.layers["bn"] = BatchNorm2D()
    block = Residual({**built.block.body.layers, "bn": BatchNorm2D(momentum=0.5)},
                     shortcut=built.block.shortcut_mode, activation=built.block.activation)
    rebuilt = Model({**built.layers, "block": block}, (2, 4, 4))
    assert rebuilt.block.bn.momentum == 0.5 and rebuilt.block.conv is built.block.conv


def test_a_block_subclass_sets_up_sub_layers_of_its_own_before_it_is_built():
    """The guard on a built block's layers refused a plugin block's own sub-layer at construction."""
    class Gated(Residual):
        def __init__(self, layers):
            super().__init__(layers)
            self.gate = Conv2D(2, 1)

        def _build(self, input_shape, rng):
            shape = super()._build(input_shape, rng)
            self.gate.build(shape, rng)
            return shape

        def children(self):
            yield from super().children()
            yield "gate", self.gate

    built = Model({"block": Gated({"conv": Conv2D(2, 3, padding=1)})}, (2, 4, 4))
    assert "block.gate.weight" in dict(built.named_parameters())
