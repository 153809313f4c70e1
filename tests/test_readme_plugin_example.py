"""The README's "Write a plugin" example, installed from the README's own text, passes the
conformance kit with the README's own test code and trains in a model."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnx
from cnnx import registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10, which cnnx supports: the same parser before it joined the standard library
    import tomli as tomllib

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(language: str) -> list[str]:
    text = README.read_text()
    section = text[text.index("## Write a plugin"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


@pytest.fixture
def readme_plugin(tmp_path, monkeypatch):
    """The module and entry points exactly as the README shows them, as an installed
    distribution (dist-info with entry_points.txt) that importlib.metadata finds."""
    module_code = blocks("python")[0]
    project = tomllib.loads(blocks("toml")[0])["project"]
    module, _ = project["entry-points"]["cnnx.layers"]["swish"].split(":")
    (tmp_path / module).mkdir()
    (tmp_path / module / "__init__.py").write_text(module_code)
    dist_info = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in names.items())
        for group, names in project["entry-points"].items())
    (dist_info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    yield
    registry.refresh()
    sys.modules.pop(module, None)


def test_readme_plugin_passes_the_readme_conformance_tests(readme_plugin, cnnx_conformance):
    namespace: dict = {}
    exec(blocks("python")[-1], namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_")]
    assert len(tests) == 2
    for test in tests:
        test(cnnx_conformance)
    model = cnnx.build_model({"c": {"type": "conv2d", "out_channels": 2, "kernel_size": 3},
                              "act": {"type": "swish", "beta": 1.5}, "f": {"type": "flatten"},
                              "fc": {"type": "dense", "out_features": 3}}, (1, 5, 5))
    out = model.forward(np.ones((2, 1, 5, 5), np.float32))
    assert out.shape == (2, 3) and out.dtype == np.float32


@pytest.mark.slow  # a pip wheel build, ~3 s
def test_readme_config_group_layout_builds_a_wheel_with_the_configs_and_the_search_path(tmp_path):
    # setuptools' automatic discovery refuses a package next to hydra_plugins ("multiple
    # top-level packages"): the README's pyproject lines must name both and ship the YAML.
    import subprocess
    import zipfile

    searchpath_code = blocks("python")[1]
    package = re.search(r'add_plugin_configs\(search_path, "[^"]+", "(\w+)\.conf"\)', searchpath_code)[1]
    (tmp_path / package / "conf" / "loss").mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "conf" / "loss" / "my_loss.yaml").write_text("type: my_loss\n")
    # Hydra's pkg:// source reports a config folder without __init__.py as "not available".
    assert f"`{package}/conf/__init__.py`" in README.read_text()
    (tmp_path / package / "conf" / "__init__.py").write_text("")
    (tmp_path / "hydra_plugins" / f"{package}_searchpath").mkdir(parents=True)
    (tmp_path / "hydra_plugins" / f"{package}_searchpath" / "__init__.py").write_text(searchpath_code)
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "{package}"\nversion = "0.1.0"\n\n' + blocks("toml")[1])
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # A packages list without my_pkg.conf.loss installs with setuptools' "Package would be
    # ignored" warning, a screenful for each config-group folder.
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"{package}/conf/loss/my_loss.yaml" in names
    assert f"hydra_plugins/{package}_searchpath/__init__.py" in names
    assert "hydra_plugins/__init__.py" not in names
    assert f"{package}/conf/__init__.py" in names
    from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource

    sys.path.insert(0, str(wheel))
    try:
        source = ImportlibResourcesConfigSource("my-pkg", f"pkg://{package}.conf")
        assert source.available() and source.is_config("loss/my_loss")
    finally:
        sys.path.remove(str(wheel))
        for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
            del sys.modules[name]
