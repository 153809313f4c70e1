"""Session set-up shared by tests/ and the plugin distributions' own tests in plugins/*/tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_install import PLUGINS, pip_install

PLUGINS_DIR = Path(__file__).resolve().parent / "plugins"


@pytest.fixture(scope="session")
def installed_plugins(tmp_path_factory) -> list[str]:
    """Every distribution in plugins/, pip-installed into this environment once per session
    (non-editable, like a user's install); returns their directory names."""
    from cnnx import registry

    pip_install(PLUGINS, tmp_path_factory.mktemp("plugin-sources"))
    registry.refresh()
    return [p.name for p in PLUGINS]


@pytest.fixture(autouse=True)
def _plugins_for_plugin_suites(request) -> None:
    # plugins/*/tests are written for an environment where their plugin is installed, as a
    # plugin author runs them; when the whole repository's suite runs, that happens here.
    if PLUGINS_DIR in Path(request.node.path).parents:
        request.getfixturevalue("installed_plugins")
