"""cnnx's pytest plugin (entry point ``pytest11: cnnx``): the conformance kit as a fixture.

Installed with cnnx, so any plugin's test suite can write::

    def test_my_layer(cnnx_conformance):
        cnnx_conformance.layer("my_layer", {"out_channels": 4}, input_shape=(3, 8, 8))

Nothing is imported from cnnx until the fixture is used: pytest loads this module in every
session of an environment where cnnx is installed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture
def cnnx_conformance() -> SimpleNamespace:
    """The conformance kit: ``.layer``, ``.loss``, ``.optimizer``, ``.dataset`` (each runs
    every check on a registered name) and ``.registered(kind, distribution)``."""
    from cnnx.testing import conformance

    return SimpleNamespace(
        layer=conformance.check_layer,
        loss=conformance.check_loss,
        optimizer=conformance.check_optimizer,
        dataset=conformance.check_dataset,
        registered=conformance.registered_names,
    )


def pytest_report_header(config: pytest.Config) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"cnnx conformance kit: cnnx {version('cnnx')}"
    except PackageNotFoundError:
        return "cnnx conformance kit: cnnx (not installed)"
