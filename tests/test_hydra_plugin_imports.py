"""A module in the hydra_plugins namespace that fails to import (a plugin's SearchPathPlugin, whose
configs then are on no search path) is a row of ``cnnx plugins --check``, which exits 1."""

from __future__ import annotations

import sys
from pathlib import Path

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


def editable_plugin(tmp_path, monkeypatch) -> "Path":
    """A plugin with a SearchPathPlugin module, installed from its folder: the dist-info on
    sys.path, the folder itself not (setuptools' editable import hook adds none)."""
    source = tmp_path / "cnnxtest-editable"
    (source / "hydra_plugins" / "cnnxtest_editable_searchpath").mkdir(parents=True)
    (source / "hydra_plugins" / "cnnxtest_editable_searchpath" / "__init__.py").write_text("")
    info = tmp_path / "site" / "cnnxtest_editable-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cnnxtest-editable\nVersion: 0.1\n")
    (info / "direct_url.json").write_text(f'{{"url": "{source.as_uri()}", "dir_info": {{"editable": true}}}}')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return source


def test_a_plugin_whose_editable_install_hides_its_configs_from_hydra_is_named_with_the_fix(tmp_path, monkeypatch):
    """setuptools' default editable mode imports through a hook that adds no folder, and Hydra
    lists the hydra_plugins folders: the plugin's configs were silently missing from runs."""
    from hydra.errors import MissingConfigException

    from cnnx.cli import one_line

    source = editable_plugin(tmp_path, monkeypatch)
    advice = (f"cnnxtest-editable 0.1 is installed editable through setuptools' import hook, which hides its "
              f"hydra_plugins.cnnxtest_editable_searchpath from Hydra's plugin scan, so the configs it adds are "
              f"missing from every run: reinstall it with pip install -e {source} --config-settings "
              f"editable_mode=strict")
    [row] = [line for line in plugins.format_table().splitlines() if "cnnxtest" in line]
    assert row.split()[:4] == ["hydra_plugins", "cnnxtest_editable_searchpath", "cnnxtest-editable", "0.1"]
    assert row.endswith(f"← BROKEN: {advice}")
    error = MissingConfigException("In 'config': Could not find 'model/from_plugin'", "model/from_plugin", ["lenet5"])
    assert one_line(error) == f"In 'config': Could not find 'model/from_plugin'; available: lenet5; {advice}"
    # Installed so that its folder is on sys.path (editable_mode=strict or compat, or not editable).
    with monkeypatch.context() as path:
        path.syspath_prepend(str(source))
        assert not [line for line in plugins.format_table().splitlines() if "cnnxtest" in line]
    # Not editable: whatever its folder holds now, what was installed is another matter.
    (tmp_path / "site" / "cnnxtest_editable-0.1.dist-info" / "direct_url.json").write_text(
        f'{{"url": "{source.as_uri()}", "dir_info": {{}}}}')
    assert not [line for line in plugins.format_table().splitlines() if "cnnxtest" in line]


REAL_PLUGIN = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
                      '[project]\nname = "cnnxtest-real-editable"\nversion = "0.1"\n'
                      '[tool.setuptools.packages.find]\ninclude = ["cnnxtest_real*", "hydra_plugins.cnnxtest_real_searchpath"]\n'
                      '[tool.setuptools.package-data]\ncnnxtest_real = ["conf/*/*.yaml"]\n',
    "cnnxtest_real/__init__.py": "",
    "cnnxtest_real/conf/__init__.py": "",  # pkg://cnnxtest_real.conf is found as a package
    "cnnxtest_real/conf/model/real_tiny.yaml": "name: real_tiny\nlayers:\n  flatten: {type: flatten}\n"
                                               "  fc: {type: dense, out_features: 10}\n",
    "hydra_plugins/cnnxtest_real_searchpath/__init__.py":
        "from hydra.plugins.search_path_plugin import SearchPathPlugin\n\n\n"
        "class CnnxtestRealSearchPath(SearchPathPlugin):\n"
        "    def manipulate_search_path(self, search_path):\n"
        "        from cnnx.plugin_configs import add_plugin_configs\n\n"
        "        add_plugin_configs(search_path, 'cnnxtest-real-editable', 'cnnxtest_real.conf')\n",
}


@pytest.mark.slow
def test_a_real_setuptools_editable_install_is_named_and_its_strict_mode_brings_the_configs_back(tmp_path):
    """`pip install -e` as a plugin author types it, in an environment of its own that sees this
    one's packages (cnnx, Hydra, setuptools) through a .pth file."""
    import os
    import site
    import subprocess

    source = tmp_path / "cnnxtest-real-editable"
    for name, text in REAL_PLUGIN.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    environment = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(environment)], check=True, timeout=300)
    python = str(environment / "bin" / "python")
    own_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    # addsitedir, so that the .pth files there (an editable cnnx's finder) are read too.
    (Path(own_site) / "cnnx_test_parent.pth").write_text(
        "".join(f"import site; site.addsitedir({folder!r})\n" for folder in site.getsitepackages()))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([python, *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert not check or done.returncode == 0, done.stderr[-2000:]
        return done

    pip = ["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--disable-pip-version-check", "-e",
           str(source)]
    run(*pip)
    listing = run("-m", "cnnx", "plugins").stdout
    assert "← BROKEN: cnnxtest-real-editable 0.1 is installed editable through setuptools' import hook" in listing
    refused = run("-m", "cnnx", "+experiment=digits_small", "model=real_tiny", "trainer.epochs=1", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith(
        f"reinstall it with pip install -e {source} --config-settings editable_mode=strict")
    run(*pip, "--config-settings", "editable_mode=strict")
    listing = run("-m", "cnnx", "plugins").stdout
    assert "BROKEN" not in listing and "model=real_tiny" in listing
