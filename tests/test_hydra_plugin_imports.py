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


@pytest.mark.filterwarnings("ignore::UserWarning:hydra.core.plugins")
def test_a_single_file_hydra_plugin_module_is_named_by_its_distribution(tmp_path, monkeypatch):
    (tmp_path / "hydra_plugins").mkdir()
    (tmp_path / "hydra_plugins" / "cnnxtest_single.py").write_text("import cnnxtest_no_such_module\n")
    dist_info = tmp_path / "cnnxtest_single-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: cnnxtest-single\nVersion: 0.1\n")
    (dist_info / "RECORD").write_text("hydra_plugins/cnnxtest_single.py,,\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    [row] = [line for line in plugins.format_table(check=True).splitlines() if "cnnxtest_single" in line]
    assert row.split()[:4] == ["hydra_plugins", "cnnxtest_single", "cnnxtest-single", "0.1"]


@pytest.mark.slow
@pytest.mark.parametrize("command", [["plugins", "--check"], ["+experiment=digits_small", "trainer.epochs=1"],
                                     ["-m", "+experiment=digits_small", "trainer.epochs=1"]])
def test_a_hydra_plugin_module_raising_another_error_stops_everything_in_one_line(tmp_path, command):
    """Hydra's scan catches ImportError only: anything else was a traceback from inside Hydra,
    at every run and at cnnx plugins --check alike."""
    import os
    import subprocess

    (tmp_path / "hydra_plugins").mkdir()
    (tmp_path / "hydra_plugins" / "cnnxtest_raises.py").write_text("raise RuntimeError('broken at import')\n")
    result = subprocess.run([sys.executable, "-m", "cnnx", *command], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=300)
    assert result.returncode == 2  # as any input a run refuses
    assert result.stderr.strip().splitlines() == [
        f"cnnx: error: Hydra plugin module hydra_plugins.cnnxtest_raises ({tmp_path}/hydra_plugins/cnnxtest_raises.py) "
        "fails to import (RuntimeError: broken at import); Hydra stops at it, so no run can start: fix or uninstall it"]


@pytest.mark.slow
def test_the_check_shows_a_module_hydra_skips_on_its_row_without_hydras_warning_above_the_table(tmp_path):
    import os
    import subprocess

    (tmp_path / "hydra_plugins").mkdir()
    (tmp_path / "hydra_plugins" / "cnnxtest_skipped.py").write_text("import cnnxtest_no_such_module\n")
    result = subprocess.run([sys.executable, "-m", "cnnx", "plugins", "--check"], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=300)
    assert result.returncode == 1
    assert "hydra_plugins.cnnxtest_skipped   ← BROKEN: fails to import" in result.stdout
    assert result.stderr == ""
