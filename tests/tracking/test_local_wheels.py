"""Distributions a logged model needs that no package index holds travel inside it as wheels
(``cnnx.tracking.local_wheels``): built from small installations made here, checked by pip."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, PathDistribution
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
                 top_level: bool = True) -> PathDistribution:
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
    metadata = ["METADATA", "entry_points.txt", "INSTALLER", "RECORD"]
    if top_level:  # setuptools writes it; hatchling, flit and pdm do not
        (info / "top_level.txt").write_text("demo_pkg\n")
        metadata.append("top_level.txt")
    (info / "INSTALLER").write_text("pip\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    listed = [*files, *(f"demo_pkg-1.0.dist-info/{n}" for n in metadata),
              "../../../bin/demo", "demo_pkg/__pycache__/__init__.cpython-311.pyc"]
    (info / "RECORD").write_text("".join(f"{name},,\n" for name in listed))
    return PathDistribution(info)


def from_folder(path: Path) -> dict:
    return {"url": path.as_uri(), "dir_info": {}}


def packed_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if ".dist-info/" not in name}


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A site-packages folder on sys.path, as the installation's is."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_a_distribution_installed_from_a_folder_is_packed_into_a_wheel_pip_installs(tmp_path, site):
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


def test_the_same_code_packs_into_the_same_bytes_and_other_code_into_another_folder(tmp_path, site):
    """MLflow reuses the environment it built for a model whose requirements.txt reads the same:
    a wheel of other code under the same name would be served with the first one's code."""
    dist = installation(site, from_folder(tmp_path / "checkout"))
    first = pack_wheel(dist, tmp_path / "wheels")
    again = pack_wheel(dist, tmp_path / "again")
    assert (again.read_bytes(), again.parent.name) == (first.read_bytes(), first.parent.name)
    (site / "demo_pkg" / "layers.py").write_text("class Demo:\n    changed = True\n")
    assert pack_wheel(dist, tmp_path / "wheels").parent.name != first.parent.name


@pytest.mark.parametrize(("direct_url", "local"), [
    ({"url": "file:///src/demo", "dir_info": {}}, "/src/demo"),
    ({"url": "file:///src/demo", "dir_info": {"editable": True}}, "/src/demo"),
    ({"url": "file:///dist/demo_pkg-1.0-py3-none-any.whl", "archive_info": {}}, "/dist/demo_pkg-1.0-py3-none-any.whl"),
    ({"url": "file:///src/with%20space", "dir_info": {}}, "/src/with space"),
    ({"url": "file:///src/repo", "vcs_info": {"vcs": "git", "commit_id": "abc"}}, "/src/repo"),
    ({"url": "https://example.org/demo_pkg-1.0.tar.gz", "archive_info": {}}, None),
    ({"url": "https://example.org/repo.git", "vcs_info": {"vcs": "git", "commit_id": "abc"}}, None),
    ({"dir_info": {}}, None),
    ([], None),
    (None, None),  # installed from an index: pip records no direct URL
])
def test_only_a_local_folder_file_or_repository_counts_as_a_source_to_pack(tmp_path, direct_url, local):
    dist = installation(tmp_path / "site", direct_url)
    assert local_source(dist) == (None if local is None else Path(local))


@pytest.mark.parametrize(("direct_url", "line"), [
    (None, "demo-pkg==1.0"),
    ({"url": "https://example.org/demo_pkg-1.0.tar.gz", "archive_info": {"hashes": {"sha256": "ab"}}},
     "demo-pkg @ https://example.org/demo_pkg-1.0.tar.gz"),
    ({"url": "https://example.org/repo.git", "vcs_info": {"vcs": "git", "commit_id": "4f2e", "requested_revision": "main"},
      "subdirectory": "plugins/demo"},
     "demo-pkg @ git+https://example.org/repo.git@4f2e#subdirectory=plugins/demo"),
])
def test_a_distribution_from_an_index_or_a_remote_url_is_named_as_pip_reaches_it_again(
        tmp_path, site, direct_url, line):
    installation(site, direct_url)
    assert requirement_for("demo-pkg", tmp_path / "model") == line
    assert not (tmp_path / "model").exists()


def test_a_distribution_with_compiled_files_stays_pinned_with_a_warning(tmp_path, site, capsys):
    installation(site, from_folder(tmp_path), {**PACKAGE, "demo_pkg/_fast.cpython-311-x86_64-linux-gnu.so": ""})
    assert requirement_for("demo-pkg", tmp_path / "model") == "demo-pkg==1.0"
    assert capsys.readouterr().err == (
        "cnnx: warning: demo-pkg could not be packed into the model (compiled code, no RECORD, or none of its files "
        "found); the model's requirements.txt pins demo-pkg==1.0, which only an index holding that release can "
        "install\n")


def test_a_distribution_known_only_from_a_builds_egg_info_is_pinned_with_a_warning(tmp_path, monkeypatch, capsys):
    """A checkout that was built but never installed: its metadata names no installation."""
    leftover = tmp_path / "checkout" / "demo_pkg.egg-info"
    leftover.mkdir(parents=True)
    (leftover / "PKG-INFO").write_text(METADATA)
    monkeypatch.syspath_prepend(str(tmp_path / "checkout"))
    assert requirement_for("demo-pkg", tmp_path / "model") == "demo-pkg==1.0"
    assert "demo-pkg is not installed: only a build's metadata was found" in capsys.readouterr().err
    with pytest.raises(PackageNotFoundError):
        requirement_for("cnnxtest-never-installed", tmp_path / "model")


def test_a_file_that_cannot_be_read_leaves_the_pin_and_a_warning_not_a_model_lost(tmp_path, site, capsys):
    installation(site, from_folder(tmp_path))
    (site / "demo_pkg" / "layers.py").unlink()  # gone since the install; RECORD still lists it
    assert requirement_for("demo-pkg", tmp_path / "model") == "demo-pkg==1.0"
    assert capsys.readouterr().err.startswith("cnnx: warning: demo-pkg could not be packed into the model (")


def test_packing_names_the_wheel_by_its_path_in_the_model(tmp_path, site):
    installation(site, from_folder(tmp_path))
    line = requirement_for("demo_pkg", tmp_path / "model")
    assert re.fullmatch(r"wheels/[0-9a-f]{16}/demo_pkg-1\.0-py3-none-any\.whl", line)
    assert (tmp_path / "model" / line).is_file()


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
    # Either order: an editable install's .pth comes after site-packages, its finder before.
    for first, second in ((others, source), (source, others)):
        with monkeypatch.context() as path:
            path.syspath_prepend(str(first))
            path.syspath_prepend(str(second))
            assert packed_names(pack_wheel(dist, tmp_path / "wheels")) == {*PACKAGE, "nsp/demo_searchpath/__init__.py"}


def test_an_editable_install_by_another_backend_packs_the_source_its_pth_file_adds(tmp_path, monkeypatch):
    """hatchling, flit and pdm install a plain .pth file (not named __editable__) and no
    top_level.txt: the .pth file is no code, and the entry points name the package."""
    source = tmp_path / "checkout" / "src"
    for name, text in PACKAGE.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    site = tmp_path / "site"
    dist = installation(site, {"url": source.parent.as_uri(), "dir_info": {"editable": True}},
                        files={"_demo_pkg.pth": str(source) + "\n"}, top_level=False)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(source))
    assert packed_names(pack_wheel(dist, tmp_path / "wheels")) == set(PACKAGE)


def test_a_source_tree_gives_no_dotfiles_caches_or_editor_backups_and_a_link_loop_ends(tmp_path, monkeypatch):
    source = tmp_path / "checkout"
    leftovers = {".env": "token=secret\n", ".mypy_cache/blob": "x", "conf/model/demo.yaml~": "old",
                 "layers.py.orig": "old", "__pycache__/layers.cpython-311.pyc": ""}
    for name, text in {**PACKAGE, **{f"demo_pkg/{n}": t for n, t in leftovers.items()}}.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    (source / "demo_pkg" / "conf" / "loop").symlink_to(source / "demo_pkg")
    site = tmp_path / "site"
    dist = installation(site, {"url": source.as_uri(), "dir_info": {"editable": True}},
                        files={"__editable__.demo_pkg-1.0.pth": str(source) + "\n"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(source))
    assert packed_names(pack_wheel(dist, tmp_path / "wheels")) == set(PACKAGE)


def test_a_checkout_shadowing_the_installation_is_what_gets_packed(tmp_path, site, monkeypatch):
    """`python -m cnnx` in the checkout imports the checkout's cnnx (the working directory comes
    first on sys.path), edited or not since `pip install .`: that is the code the run used."""
    installation(site, from_folder(tmp_path / "checkout"))
    checkout = tmp_path / "checkout"
    for name, text in {**PACKAGE, "demo_pkg/layers.py": "class Demo:\n    edited = True\n"}.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(text)
    monkeypatch.syspath_prepend(str(checkout))
    line = requirement_for("demo-pkg", tmp_path / "model")
    with zipfile.ZipFile(tmp_path / "model" / line) as archive:
        assert archive.read("demo_pkg/layers.py") == b"class Demo:\n    edited = True\n"


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
    assert requirement_for("demo-pkg", tmp_path / "model").endswith("/demo_pkg-1.0-py3-none-any.whl")


def git_checkout(source: Path, files: dict[str, str]) -> list[str]:
    """``source`` as a git repository with ``files`` committed; returns the git command prefix."""
    for name, text in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    git = ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "protocol.file.allow=always"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "package"], check=True)
    return git


def editable(tmp_path: Path, source: Path, monkeypatch) -> PathDistribution:
    site = tmp_path / "site"
    dist = installation(site, {"url": source.as_uri(), "dir_info": {"editable": True}},
                        files={"__editable__.demo_pkg-1.0.pth": str(source) + "\n"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(source))
    return dist


def test_a_git_checkout_gives_tracked_files_and_new_modules_but_no_other_untracked_or_ignored_file(
        tmp_path, monkeypatch):
    """A credentials file or a run's outputs left in the package folder went into every model."""
    source = tmp_path / "checkout"
    git_checkout(source, {**PACKAGE, ".gitignore": "*.log\n"})
    extra = {"demo_pkg/new_layer.py": "NEW = 1\n", "demo_pkg/credentials.txt": "token=secret\n",
             "demo_pkg/outputs/weights.npz": "x", "demo_pkg/run.log": "ignored\n"}
    for name, text in extra.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    dist = editable(tmp_path, source, monkeypatch)
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere" / ".git"))  # a git hook's, say: not the package's
    assert packed_names(pack_wheel(dist, tmp_path / "wheels")) == {*PACKAGE, "demo_pkg/new_layer.py"}


def test_behind_a_link_or_in_a_submodule_the_files_git_tracks_there_are_kept_and_no_others(tmp_path, monkeypatch):
    """git lists a tracked link, or a submodule, as one entry: the files beneath are judged by the
    repository they lie in, which ignores some and does not track others."""
    shared = tmp_path / "shared"
    git_checkout(shared, {"conf/model/shared.yaml": "layers: {}\n", "conf/.gitignore": "secrets/\n"})
    (shared / "conf" / "secrets").mkdir()
    (shared / "conf" / "secrets" / "mlflow.yaml").write_text("token: x\n")
    (shared / "conf" / "notes.txt").write_text("untracked\n")
    vendored = tmp_path / "vendored"
    git_checkout(vendored, {"__init__.py": "VENDORED = True\n", ".gitignore": "*.log\n"})
    source = tmp_path / "checkout"
    git = git_checkout(source, PACKAGE)
    (source / "demo_pkg" / "shared").symlink_to(shared / "conf")
    subprocess.run([*git, "submodule", "add", "-q", str(vendored), "demo_pkg/vendored"], check=True,
                   capture_output=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "link and submodule"], check=True)
    for name in ("run.log", "credentials.txt"):  # ignored, untracked: in the submodule's checkout
        (source / "demo_pkg" / "vendored" / name).write_text("x\n")
    dist = editable(tmp_path, source, monkeypatch)
    assert packed_names(pack_wheel(dist, tmp_path / "wheels")) == {
        *PACKAGE, "demo_pkg/shared/model/shared.yaml", "demo_pkg/vendored/__init__.py"}


def test_a_hooks_git_variables_do_not_point_the_listing_at_another_repository(tmp_path, monkeypatch):
    """A pre-commit hook of another repository sets GIT_INDEX_FILE (and GIT_DIR) to its own."""
    other = tmp_path / "other"
    git_checkout(other, {"README": "other\n"})
    source = tmp_path / "checkout"
    git_checkout(source, PACKAGE)
    dist = editable(tmp_path, source, monkeypatch)
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert packed_names(pack_wheel(dist, tmp_path / "wheels")) == set(PACKAGE)


def test_file_names_in_any_encoding_or_with_a_carriage_return_are_listed_as_the_walk_finds_them(
        tmp_path, monkeypatch):
    source = tmp_path / "checkout"
    git_checkout(source, {**PACKAGE, "demo_pkg/conf/cr\rname.yaml": "a: 1\n"})
    (source / "demo_pkg").joinpath(os.fsdecode(b"r\xe9sultat.npz")).write_bytes(b"untracked")
    dist = editable(tmp_path, source, monkeypatch)
    assert packed_names(pack_wheel(dist, tmp_path / "wheels")) == {*PACKAGE, "demo_pkg/conf/cr\rname.yaml"}


def test_a_checkout_git_cannot_read_packs_every_file_but_dotfiles_and_says_so(tmp_path, monkeypatch, capsys):
    source = tmp_path / "checkout"
    git_checkout(source, PACKAGE)
    (source / "demo_pkg" / "notes.txt").write_text("untracked\n")
    dist = editable(tmp_path, source, monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert packed_names(pack_wheel(dist, tmp_path / "wheels")) == {*PACKAGE, "demo_pkg/notes.txt"}
    assert capsys.readouterr().err.startswith(f"cnnx: warning: git could not list the files of the checkout {source}, "
                                              "which holds code of demo-pkg (")
