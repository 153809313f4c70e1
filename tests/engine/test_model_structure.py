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
    with pytest.raises(TypeError, match=r"^model.layers cannot change once the model is built; to replace or add 'fc', "
                                        r"build a new model from these layers: Model\(\{\*\*model.layers, 'fc': "
                                        r"new_layer\}, input_shape\), whose other layers keep their weights$"):
        built.layers["fc"] = Dense(10)
    with pytest.raises(TypeError, match=r"^model.layers cannot change .* to drop 'fc', build a new model without it"):
        del built.layers["fc"]
    with pytest.raises(TypeError, match=r"^Model.fc = Dense\(...\) cannot add or replace a layer: model.layers is fixed"):
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
