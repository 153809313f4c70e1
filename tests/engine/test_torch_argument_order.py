"""PyTorch users type their layers' arguments in PyTorch's order, which starts with the input
size that cnnx infers: read in cnnx's order, the same numbers built another layer silently."""

import numpy as np
import pytest

from cnnx.engine.layers.batchnorm import BatchNorm2D
from cnnx.engine.layers.conv import Conv2D
from cnnx.engine.layers.dense import Dense


@pytest.mark.parametrize("make, message", [
    # As cnnx's (out_channels, kernel_size, stride) this was 1 filter of 8x8 at stride 3.
    (lambda: Conv2D(1, 8, 3),
     r"^Conv2D\(1, 8, 3\): only out_channels and kernel_size are positional \(in_channels comes from the "
     r"input\); pass stride, padding, bias and init by name; in PyTorch's order that is Conv2D\(8, 3\); with "
     r"the rest named, Conv2D\(1, 8, stride=3\)$"),
    (lambda: Conv2D(1, 8, 3, 2, 1), r"; in PyTorch's order that is Conv2D\(8, 3, stride=2, padding=1\)$"),
    # Keywords given are kept in the call quoted and in both readings.
    (lambda: Conv2D(1, 8, 3, padding=1),
     r"^Conv2D\(1, 8, 3, padding=1\): .* that is Conv2D\(8, 3, padding=1\); with the rest named, "
     r"Conv2D\(1, 8, stride=3, padding=1\)$"),
    # A Keras-style stride: both readings fit.
    (lambda: Conv2D(8, 3, 2), r"that is Conv2D\(3, 2\); with the rest named, Conv2D\(8, 3, stride=2\)$"),
    # Beyond the options cnnx has (dilation, groups): no reading is offered.
    (lambda: Conv2D(1, 8, 3, 1, 0, 1, 1), r"pass stride, padding, bias and init by name$"),
    # As cnnx's (out_features, bias) this was refused for a non-boolean bias, naming neither cause.
    (lambda: Dense(64, 10),
     r"^Dense\(64, 10\): only out_features is positional \(in_features comes from the input\); pass bias "
     r"and init by name; in PyTorch's order that is Dense\(10\)$"),
    # cnnx's former positional bias: only the named reading fits.
    (lambda: Dense(10, False), r"; with the rest named, Dense\(10, bias=False\)$"),
    # As cnnx's (eps, momentum) this was eps=16: accepted, and every activation squashed.
    (lambda: BatchNorm2D(16),
     r"^BatchNorm2D\(16\): takes no positional arguments \(num_features comes from the input\); pass eps "
     r"and momentum by name; in PyTorch's order that is BatchNorm2D\(\)$"),
    (lambda: BatchNorm2D(16, 1e-3, 0.01), r"that is BatchNorm2D\(eps=0.001, momentum=0.01\)$"),
    (lambda: BatchNorm2D(1e-3), r"takes no positional arguments .*; with the rest named, BatchNorm2D\(eps=0.001\)$"),
    # nn.Linear(784, 10, False) is valid PyTorch.
    (lambda: Dense(784, 10, False), r"; in PyTorch's order that is Dense\(10, bias=False\)$"),
    # No reading that would itself be refused: a negative size, momentum=None, an unknown init.
    (lambda: Conv2D(-1, 8, 3), r"pass stride, padding, bias and init by name$"),
    (lambda: BatchNorm2D(16, momentum=None), r"^BatchNorm2D\(16, momentum=None\): .* by name$"),
    (lambda: Dense(10, False, "nonsense"), r"pass bias and init by name$"),
    # An array keyword (the message's own comparison with the default failed on it).
    (lambda: Conv2D(1, 8, 3, padding=np.array([1, 1])), r"^Conv2D\(1, 8, 3, padding=array\(\[1, 1\]\)\): "),
    # A subclass passing its arguments on (its own signature has no defaults to compare with).
    (lambda: type("MyConv", (Conv2D,), {"__init__": lambda self, *a, **k: Conv2D.__init__(self, *a, **k)})(1, 8, 3),
     r"^MyConv\(1, 8, 3\): .* in PyTorch's order that is MyConv\(8, 3\)"),
])
def test_arguments_in_pytorch_order_are_refused_with_the_cnnx_call(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_the_translated_calls_build_what_pytorch_builds():
    x = np.zeros((2, 1, 12, 12), np.float32)
    conv = Conv2D(8, 3, stride=2, padding=1)
    conv(x)
    assert conv.params["weight"].shape == (8, 1, 3, 3)  # torch.nn.Conv2d(1, 8, 3, 2, 1).weight
    dense = Dense(10)
    dense(np.zeros((2, 64), np.float32))
    assert dense.params["weight"].shape == (10, 64)  # torch.nn.Linear(64, 10).weight
    assert BatchNorm2D(eps=1e-3, momentum=0.01).get_config() == {"eps": 1e-3, "momentum": 0.01}
