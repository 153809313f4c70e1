"""Distributions a logged model needs that no package index holds travel inside it as wheels
(``cnnx.tracking.local_wheels``): built from small installations made here, checked by pip."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from importlib.metadata import PathDistribution
from pathlib import Path

import pytest

from cnnx.tracking.local_wheels import local_source, pack_wheel, requirement_for

METADATA = "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\nRequires-Dist: numpy\n"
ENTRY_POINTS = "[cnnx.layers]\ndemo = demo_pkg.layers:Demo\n"
PACKAGE = {
    "demo_pkg/__init__.py": "VALUE = 42\n",
    "demo_pkg/layers.py": "class Demo:\n    pass\n",
    "demo_pkg/conf/model/demo.yaml": "layers: {}\n",
}


def installation(site: Path, direct_url: dict | None, files: dict[str, str] | None = None,
                 record_extra: tuple[str, ...] = ()) -> PathDistribution:
    """A distribution ``demo-pkg`` 1.0 installed into ``site`` as pip leaves one: its files,
    and a .dist-info whose RECORD lists them (and what an installer adds: a script outside
    site-packages, byte code)."""
    files = PACKAGE if files is None else files
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    info = site / "demo_pkg-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(METADATA)
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (info / "top_level.txt").write_text("demo_pkg\n")
    (info / "INSTALLER").write_text("pip\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    listed = [*files, *(f"demo_pkg-1.0.dist-info/{n}" for n in ("METADATA", "entry_points.txt", "top_level.txt",
                                                                "INSTALLER", "RECORD")),
              "../../../bin/demo", "demo_pkg/__pycache__/__init__.cpython-311.pyc", *record_extra]
    (info / "RECORD").write_text("".join(f"{name},,\n" for name in listed))
    return PathDistribution(info)


def from_folder(path: Path) -> dict:
    return {"url": path.as_uri(), "dir_info": {}}


def test_a_distribution_installed_from_a_folder_is_packed_into_a_wheel_pip_installs(tmp_path):
    site = tmp_path / "site"
    dist = installation(site, from_folder(tmp_path / "checkout"))
    wheel = pack_wheel(dist, tmp_path / "wheels")
    assert wheel.name == "demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert names == {*PACKAGE, *(f"demo_pkg-1.0.dist-info/{n}" for n in (
            "METADATA", "entry_points.txt", "top_level.txt", "WHEEL", "RECORD"))}
        rows = list(csv.reader(io.StringIO(archive.read("demo_pkg-1.0.dist-info/RECORD").decode())))
        for name, digest, size in rows[:-1]:
            data = archive.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, size) == (f"sha256={expected}", str(len(data)))
        assert rows[-1] == ["demo_pkg-1.0.dist-info/RECORD", "", ""]
    target = tmp_path / "installed"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                             "--disable-pip-version-check", "--target", str(target), str(wheel)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    probe = ("import importlib.metadata as m, demo_pkg; "
             "print(demo_pkg.VALUE, [e.value for e in m.entry_points(group='cnnx.layers', name='demo')], "
             "m.version('demo-pkg'))")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                           env={"PYTHONPATH": str(target)}, check=True).stdout.split(maxsplit=1)
    assert shown == ["42", "['demo_pkg.layers:Demo'] 1.0\n"]
    assert (target / "demo_pkg" / "conf" / "model" / "demo.yaml").is_file()


def test_the_same_installation_packs_into_the_same_bytes(tmp_path):
    dist = installation(tmp_path / "site", from_folder(tmp_path / "checkout"))
    first = pack_wheel(dist, tmp_path / "one").read_bytes()
    assert pack_wheel(dist, tmp_path / "two").read_bytes() == first


@pytest.mark.parametrize(("direct_url", "local"), [
    ({"url": "file:///src/demo", "dir_info": {}}, "/src/demo"),
    ({"url": "file:///src/demo", "dir_info": {"editable": True}}, "/src/demo"),
    ({"url": "file:///dist/demo_pkg-1.0-py3-none-any.whl", "archive_info": {}}, "/dist/demo_pkg-1.0-py3-none-any.whl"),
    ({"url": "file:///src/with%20space", "dir_info": {}}, "/src/with space"),
    ({"url": "https://example.org/demo_pkg-1.0.tar.gz", "archive_info": {}}, None),
    ({"url": "file:///src/demo", "vcs_info": {"vcs": "git", "commit_id": "abc"}}, None),
    ({"dir_info": {}}, None),
    ([], None),
    (None, None),  # installed from an index: pip records no direct URL
])
def test_only_a_local_folder_or_file_counts_as_a_source_no_index_holds(tmp_path, direct_url, local):
    dist = installation(tmp_path / "site", direct_url)
    assert local_source(dist) == (None if local is None else Path(local))


def test_a_distribution_from_an_index_or_with_compiled_files_stays_pinned(tmp_path, monkeypatch):
    from_index = tmp_path / "index"
    installation(from_index, None)
    monkeypatch.syspath_prepend(str(from_index))
    assert requirement_for("demo-pkg", tmp_path / "model") == "demo-pkg==1.0"
    assert not (tmp_path / "model").exists()

    compiled = tmp_path / "compiled"
    installation(compiled, from_folder(tmp_path), {**PACKAGE, "demo_pkg/_fast.cpython-311-x86_64-linux-gnu.so": ""})
    monkeypatch.syspath_prepend(str(compiled))
    assert requirement_for("demo-pkg", tmp_path / "model") == "demo-pkg==1.0"
    assert not (tmp_path / "model").exists()

    packed = tmp_path / "packed"
    installation(packed, from_folder(tmp_path))
    monkeypatch.syspath_prepend(str(packed))
    assert requirement_for("demo_pkg", tmp_path / "model") == "wheels/demo_pkg-1.0-py3-none-any.whl"
    assert (tmp_path / "model" / "wheels" / "demo_pkg-1.0-py3-none-any.whl").is_file()


def test_an_editable_install_packs_its_packages_from_the_source_tree_and_only_its_own_namespace_portion(
        tmp_path, monkeypatch):
    """Its RECORD lists only the hook that finds the source; a namespace package (as
    hydra_plugins is) also has portions that other distributions installed."""
    source = tmp_path / "checkout"
    for name, text in {**PACKAGE, "nsp/demo_searchpath/__init__.py": "", "demo_pkg/__pycache__/x.pyc": ""}.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    others = tmp_path / "site"
    (others / "nsp" / "someone_else").mkdir(parents=True)
    (others / "nsp" / "someone_else" / "__init__.py").write_text("")
    dist = installation(others, {"url": source.as_uri(), "dir_info": {"editable": True}},
                        files={"__editable__.demo_pkg-1.0.pth": str(source) + "\n"})
    (others / "demo_pkg-1.0.dist-info" / "top_level.txt").write_text("demo_pkg\nnsp\n")
    monkeypatch.syspath_prepend(str(others))
    monkeypatch.syspath_prepend(str(source))
    with zipfile.ZipFile(pack_wheel(dist, tmp_path / "wheels")) as archive:
        packed = {n for n in archive.namelist() if ".dist-info/" not in n}
    assert packed == {*PACKAGE, "nsp/demo_searchpath/__init__.py"}


def test_a_builds_leftover_egg_info_first_on_the_path_is_not_taken_for_the_installation(tmp_path, monkeypatch):
    """Run from a checkout, the working directory comes first on sys.path, and `pip install .`
    left setuptools' demo_pkg.egg-info there: no record of any installation, maybe older."""
    site = tmp_path / "site"
    installation(site, from_folder(tmp_path / "checkout"))
    leftover = tmp_path / "checkout" / "demo_pkg.egg-info"
    leftover.mkdir(parents=True)
    (leftover / "PKG-INFO").write_text(METADATA.replace("1.0", "0.9"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(tmp_path / "checkout"))
    assert requirement_for("demo-pkg", tmp_path / "model") == "wheels/demo_pkg-1.0-py3-none-any.whl"
