"""Every component cnnx itself registers passes the conformance kit, through the same
``cnnx_conformance`` fixture that plugin authors use (cnnx's pytest11 entry point)."""

import numpy as np
import pytest

CONV = {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}

#: name → list of (options, per-sample input shape)
LAYER_CASES = {
    "conv2d": [({"out_channels": 3, "kernel_size": 3, "padding": 1}, (2, 5, 5)),
               ({"out_channels": 2, "kernel_size": (2, 3), "stride": 2, "bias": False}, (3, 6, 7)),
               # Padding at stride 2: another input size gives the same output (7×7 and 8×8 → 4×4)
               # with other positions in the padding, which the kit's check at that size covers.
               ({"out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1}, (2, 7, 7))],
    "maxpool2d": [({"kernel_size": 2}, (2, 6, 6)), ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 5))],
    "avgpool2d": [({"kernel_size": 2}, (2, 6, 6)), ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 5))],
    "global_avgpool2d": [({}, (3, 4, 5))],
    "flatten": [({}, (2, 3, 4))],
    "dense": [({"out_features": 4}, (6,)), ({"out_features": 3, "bias": False}, (5,))],
    "relu": [({}, (3, 4, 4))],
    "leaky_relu": [({"negative_slope": 0.2}, (3, 4, 4)),
                   ({"negative_slope": -0.5}, (3, 4, 4))],  # keeps a mask: its output may be overwritten
    "sigmoid": [({}, (3, 4, 4))],
    "tanh": [({}, (3, 4, 4))],
    "softmax": [({}, (5,)), ({"dim": 1}, (3, 2, 2))],
    "dropout": [({"p": 0.3}, (3, 4, 4))],
    "batchnorm2d": [({"momentum": 0.2}, (3, 4, 4))],
    "residual": [({"layers": {"conv": CONV, "bn": {"type": "batchnorm2d"}}}, (3, 5, 5)),
                 ({"layers": {"conv": {**CONV, "out_channels": 4, "stride": 2}}}, (3, 6, 6))],
}


def _probabilities(rng, shape):
    return rng.uniform(0.05, 0.95, shape)


def _binary_labels(rng, shape):
    return rng.integers(0, 2, shape[0])


LOSS_CASES = {
    "cross_entropy": [({}, {}), ({"label_smoothing": 0.1}, {})],
    "bce": [({}, {"outputs_shape": (6, 1), "make_outputs": _probabilities, "make_targets": _binary_labels}),
            ({"from_logits": True}, {"outputs_shape": (6, 1), "make_targets": _binary_labels})],
    "mse": [({}, {}), ({}, {"outputs_shape": (5, 1), "make_targets": lambda rng, s: rng.standard_normal(s)})],
}

OPTIMIZER_CASES = {
    "sgd": [{}, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
            {"lr": 0.05, "momentum": 0.5, "dampening": 0.1}],
    "adam": [{}, {"weight_decay": 0.01}],
    "adamw": [{}],
    "rmsprop": [{}, {"momentum": 0.5, "weight_decay": 1e-3}],
}


def _cases(table):
    return [pytest.param(name, case, id=f"{name}-{i}") for name, cases in table.items()
            for i, case in enumerate(cases)]


@pytest.mark.parametrize(("name", "case"), _cases(LAYER_CASES))
def test_builtin_layer_conforms(cnnx_conformance, name, case):
    options, input_shape = case
    cnnx_conformance.layer(name, options, input_shape, batch_size=3)


@pytest.mark.parametrize(("name", "case"), _cases(LOSS_CASES))
def test_builtin_loss_conforms(cnnx_conformance, name, case):
    options, kwargs = case
    cnnx_conformance.loss(name, options, **kwargs)


@pytest.mark.parametrize(("name", "options"), _cases(OPTIMIZER_CASES))
def test_builtin_optimizer_conforms(cnnx_conformance, name, options):
    cnnx_conformance.optimizer(name, options)


def test_builtin_datasets_conform(cnnx_conformance, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "arrays.npz"
    np.savez(path, x=rng.random((60, 1, 5, 5)), y=np.arange(60) % 3)
    cases = {"digits": {"size": 8}, "synthetic": {"num_samples": 120, "size": 8},
             "npz": {"path": str(path)}}
    assert set(cases) == set(cnnx_conformance.registered("dataset", "cnnx"))
    for name, options in cases.items():
        cnnx_conformance.dataset(name, options)


@pytest.mark.parametrize(("kind", "table"), [("layer", LAYER_CASES), ("loss", LOSS_CASES),
                                             ("optimizer", OPTIMIZER_CASES)])
def test_every_builtin_name_has_a_conformance_case(cnnx_conformance, kind, table):
    # A new built-in without a case here fails this test instead of going unchecked.
    assert sorted(table) == cnnx_conformance.registered(kind, "cnnx")
