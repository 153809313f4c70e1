"""A module in the hydra_plugins namespace that fails to import (a plugin's SearchPathPlugin, whose
configs then are on no search path) is a row of ``cnnx plugins --check``, which exits 1."""

from __future__ import annotations

import sys

import pytest

from cnnx import plugins

MODULES = {
    "cnnxtest_broken_searchpath/__init__.py": "import cnnxtest_no_such_module\n",
    "cnnxtest_fine_searchpath/__init__.py": "",
    "_cnnxtest_private.py": "raise ImportError('never imported by Hydra')\n",  # Hydra skips _names
}


@pytest.mark.filterwarnings("ignore::UserWarning:hydra.core.plugins")  # Hydra's own lines about it
def test_a_hydra_plugin_module_that_fails_to_import_is_named_with_its_error(tmp_path, monkeypatch):
    for name, text in MODULES.items():
        (tmp_path / "hydra_plugins" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "hydra_plugins" / name).write_text(text)
    # Installed by a distribution, which the row names.
    dist_info = tmp_path / "cnnxtest_plugin-0.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: cnnxtest-plugin\nVersion: 0.3\n")
    (dist_info / "RECORD").write_text("hydra_plugins/cnnxtest_broken_searchpath/__init__.py,,\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        table = plugins.format_table(check=True)
        assert plugins.main(["--check"]) == 1
    finally:
        sys.modules.pop("hydra_plugins.cnnxtest_fine_searchpath", None)
    [row] = [line for line in table.splitlines() if "cnnxtest" in line]
    assert row.split()[:4] == ["hydra_plugins", "cnnxtest_broken_searchpath", "cnnxtest-plugin", "0.3"]
    assert row.endswith(
        "hydra_plugins.cnnxtest_broken_searchpath   ← BROKEN: fails to import (ModuleNotFoundError: No module "
        "named 'cnnxtest_no_such_module'); Hydra skips it, so what it adds (configs' search path, launcher, "
        "sweeper) is missing")
