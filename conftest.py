"""Session set-up shared by tests/ and the plugin distributions' own tests in plugins/*/tests."""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import pytest
from plugin_install import PLUGINS, pip_install

PLUGINS_DIR = Path(__file__).resolve().parent / "plugins"

# Prepared datasets are cached per test session, not in the user's ~/.cache (the CLI runs
# that tests start, and xdist's workers, inherit this). The process that made the folder
# removes it when the session ends: each run of the suite left ~30 MB in /tmp.
if "CNNX_CACHE_DIR" not in os.environ:
    os.environ["CNNX_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnx-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CNNX_CACHE_DIR"], ignore_errors=True)


def _missing_plugins() -> list[Path]:
    missing = []
    for source in PLUGINS:
        try:
            metadata.distribution(source.name)
        except metadata.PackageNotFoundError:
            missing.append(source)
    return missing


@pytest.fixture(scope="session")
def installed_plugins(tmp_path_factory) -> list[str]:
    """Every distribution in plugins/, installed into this environment (non-editable, like a
    user's install); returns their directory names.

    The README's test command installs them with pip; a session in an environment without
    them installs them here. Parallel workers (pytest-xdist) share one lock, so exactly one of
    them runs pip and the others wait for it.
    """
    from cnnx import registry

    if _missing_plugins():
        shared = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            shared = shared.parent
        with open(shared / "plugin-install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            missing = _missing_plugins()
            if missing:
                pip_install(missing, tmp_path_factory.mktemp("plugin-sources"))
        registry.refresh()
    return [p.name for p in PLUGINS]


@pytest.fixture(autouse=True)
def _plugins_for_plugin_suites(request) -> None:
    # plugins/*/tests are written for an environment where their plugin is installed, as a
    # plugin author runs them; when the whole repository's suite runs, that happens here.
    if PLUGINS_DIR in Path(request.node.path).parents:
        request.getfixturevalue("installed_plugins")
