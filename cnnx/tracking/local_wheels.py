"""How a logged model's ``requirements.txt`` names each distribution it needs, and wheels, inside
the model, of those no package index holds.

cnnx is installed from its checkout (``pip install .``), and so are its plugins: a model whose
``requirements.txt`` pinned ``cnnx==0.2.1`` sent ``mlflow models serve`` (its virtualenv or uv
environments) to an index without such a release. pip records where it installed a
distribution from (``direct_url.json``, PEP 610), so each is named by what reaches it again:
- from an index (no record): pinned, ``numpy==2.4.6``;
- from a remote VCS or archive URL: that URL, ``name @ git+https://…@<commit>``;
- from a local folder, file or repository: packed into a wheel at
  ``wheels/<content hash>/<name>-<version>-py3-none-any.whl`` in the model, and named by that
  path, as MLflow's own models with bundled wheels name theirs. MLflow installs a model's
  requirements from within its folder, where the path resolves. The content hash in the path
  changes ``requirements.txt`` whenever the code does: MLflow reuses an environment it built
  for a model with the same ``requirements.txt``, which held another checkout's code.

A wheel holds the code the run imported, with the distribution's own metadata (``METADATA``,
and ``entry_points.txt``, through which plugins register):
- imported from the installation: the files its RECORD lists;
- imported from a source tree (an editable install, or a checkout that shadows the installation
  from the working directory): the package folders, less what a build would leave out — byte
  code, dotfiles such as ``.env`` or ``.mypy_cache``, editor backups, and, in a git checkout
  (the one each file lies in, through links and submodules), every file git ignores or does not
  track but new modules (a run's outputs, a credentials file). Where git cannot list a checkout,
  its files are all taken, with a warning.
Only pure-Python code is packed (tag ``py3-none-any``): compiled files keep the pin.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib.metadata import Distribution, PackageNotFoundError, distributions
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

#: The folder, inside the model, holding the wheels; requirements.txt names files in it.
WHEELS_DIR = "wheels"

# Metadata an installer adds (PEP 376 and 610 records, uv's caches), and the two files a wheel
# holds as this packing writes them: none of them is the distribution's.
_NOT_CARRIED = {"RECORD", "INSTALLER", "REQUESTED", "WHEEL"}
_COMPILED_SUFFIXES = (".so", ".pyd", ".dll", ".dylib")
_LEFT_OUT_SUFFIXES = (".pyc", ".pyo", "~", ".swp", ".swo", ".orig", ".rej")
# A fixed timestamp, so the same installed files give the same wheel bytes in every run.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def requirement_for(name: str, folder: Path) -> str:
    """The ``requirements.txt`` line installing distribution ``name`` as it is installed here;
    a wheel it needs is written under ``folder / WHEELS_DIR`` (``folder``: the model's)."""
    dist = installation(name)
    pinned = f"{dist.metadata['Name']}=={dist.version}"
    if dist.read_text("INSTALLER") is None:
        return _pinned_anyway(pinned, f"{name} is not installed: only a build's metadata was found (run from a "
                                      f"checkout? pip install it)")
    recorded = direct_url(dist)
    if recorded is None:
        return pinned
    if local_source(dist) is None:
        return _url_reference(dist.metadata["Name"], recorded) or pinned
    try:
        wheel = pack_wheel(dist, folder / WHEELS_DIR)
    except (OSError, ValueError) as error:  # a file gone or unreadable, a name no codec takes: the model still goes
        return _pinned_anyway(pinned, f"{name} could not be packed into the model ({error})")
    if wheel is None:
        return _pinned_anyway(pinned, f"{name} could not be packed into the model (compiled code, no RECORD, or "
                                      f"none of its files found)")
    return wheel.relative_to(folder).as_posix()


def _pinned_anyway(pinned: str, why: str) -> str:
    from cnnx.cli import warn

    warn(f"{why}; the model's requirements.txt pins {pinned}, which only an index holding that release "
         "can install")
    return pinned


def installation(name: str) -> Distribution:
    """What an installer recorded of distribution ``name``: run from a checkout, the working
    directory comes first on ``sys.path``, and the ``*.egg-info`` a build left there describes
    no installation (no ``direct_url.json``, and perhaps an older version)."""
    found = list(distributions(name=name))
    if not found:
        raise PackageNotFoundError(name)
    return next((dist for dist in found if dist.read_text("INSTALLER") is not None), found[0])


def direct_url(dist: Distribution) -> dict[str, Any] | None:
    """pip's record of the URL ``dist`` was installed from, or None (an index, or no record)."""
    try:
        recorded = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        return None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("url"), str):
        return None
    return recorded


def local_source(dist: Distribution) -> Path | None:
    """The local folder, file or repository ``dist`` was installed from, or None."""
    recorded = direct_url(dist)
    if recorded is None or not recorded["url"].startswith("file:"):
        return None
    return Path(url2pathname(urlsplit(recorded["url"]).path))


def _url_reference(name: str, recorded: dict[str, Any]) -> str | None:
    """A PEP 508 direct reference to a remote source, as pip would install it again."""
    url = recorded["url"]
    vcs = recorded.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs") and vcs.get("commit_id"):
        url = f"{vcs['vcs']}+{url}@{vcs['commit_id']}"
    elif "archive_info" not in recorded:
        return None
    subdirectory = recorded.get("subdirectory")
    return f"{name} @ {url}" + (f"#subdirectory={subdirectory}" if subdirectory else "")


def pack_wheel(dist: Distribution, folder: Path) -> Path | None:
    """Write the installed ``dist`` as a wheel under ``folder``; None when it cannot be packed
    (compiled files, no RECORD, or none of its code found)."""
    record = _record(dist)
    if record is None:
        return None
    version = dist.version.replace("-", "_")
    info_dir = f"{wheel_name(dist.metadata['Name'])}-{version}.dist-info"
    files = dict(_code_files(dist, record))
    if not files or any(name.endswith(_COMPILED_SUFFIXES) for name in files):
        return None
    for path in record:
        parts = path.parts
        if len(parts) >= 2 and parts[0].endswith(".dist-info") and not _left_out(parts) and (
                (len(parts) == 2 and parts[1] not in _NOT_CARRIED and not parts[1].endswith(".json"))
                or parts[1] == "licenses"):
            files["/".join((info_dir, *parts[1:]))] = Path(str(dist.locate_file(path)))
    if f"{info_dir}/METADATA" not in files:
        return None
    contents = {name: _read(files[name]) for name in sorted(files)}
    contents[f"{info_dir}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: cnnx (repacked from its installation)\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n").encode(), False
    rows = [(name, _record_hash(data), str(len(data))) for name, (data, _) in contents.items()]
    record_text = io.StringIO()
    csv.writer(record_text, lineterminator="\n").writerows([*rows, (f"{info_dir}/RECORD", "", "")])
    contents[f"{info_dir}/RECORD"] = record_text.getvalue().encode(), False
    digest = hashlib.sha256(record_text.getvalue().encode()).hexdigest()[:16]
    target = folder / digest / f"{info_dir[:-len('.dist-info')]}-py3-none-any.whl"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (data, executable) in contents.items():
            entry = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            entry.external_attr = (0o755 if executable else 0o644) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    partial.replace(target)
    return target


def wheel_name(name: str) -> str:
    """A distribution name as wheel file names spell it (``cnnx-contrib`` → ``cnnx_contrib``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _record(dist: Distribution) -> list[PurePosixPath] | None:
    """The files RECORD lists, read here: ``dist.files`` of the importlib_metadata backport (which
    MLflow imports, and which then answers ``distributions()``) drops files that are gone, and a
    wheel missing them would install without complaint."""
    text = dist.read_text("RECORD")
    return None if text is None else [PurePosixPath(row[0]) for row in csv.reader(io.StringIO(text)) if row]


def _code_files(dist: Distribution, record: list[PurePosixPath]) -> Iterator[tuple[str, Path]]:
    """(name in the wheel, file) for each file of the code Python imports as ``dist``'s."""
    site = Path(str(dist.locate_file(""))).resolve()
    installed = [path for path in record if not _hook_or_metadata(path.parts)]
    source = local_source(dist)
    git = _GitFiles(dist.metadata["Name"])  # one listing per repository, for all its packages
    for top in _top_level_names(dist, installed):
        namespace = _is_namespace(top)  # hydra_plugins: portions from several distributions
        for root in _imported_from(top):
            if root.resolve().is_relative_to(site):  # the installation: exactly its RECORD's files
                for path in installed:
                    if path.parts[0] in (top, f"{top}.py") and not _left_out(path.parts):
                        yield "/".join(path.parts), Path(str(dist.locate_file(path)))
            # An editable install, or a checkout shadowing the installation: its source folder;
            # a namespace package's portions elsewhere are other distributions'.
            elif not namespace or (source is not None and root.resolve().is_relative_to(source.resolve())):
                yield from _source_files(top, root, git)
            if not namespace:
                break


def _hook_or_metadata(parts: tuple[str, ...]) -> bool:
    """RECORD entries that are no code: metadata, files outside site-packages (scripts), byte
    code, and the ``.pth`` files and finders through which an editable install finds its source."""
    return (".." in parts or parts[0].endswith((".dist-info", ".pth")) or parts[0].startswith("__editable__")
            or _left_out(parts))


def _top_level_names(dist: Distribution, installed: list) -> list[str]:
    """The importable names ``dist`` provides: setuptools lists them (``top_level.txt``); other
    backends' installs show them in RECORD, and a plugin's in its entry points."""
    names = dict.fromkeys((dist.read_text("top_level.txt") or "").split())
    names.update(dict.fromkeys(path.parts[0].removesuffix(".py") for path in installed))
    if not names:  # an editable install by another backend: its RECORD lists only a .pth file
        names.update(dict.fromkeys(ep.module.split(".")[0] for ep in dist.entry_points))
    return [name for name in names if name.isidentifier()]


def _spec(top: str) -> Any:
    """The import spec of ``top``: of the module Python did import, when it has (the code that
    ran), else of the one it would."""
    spec = getattr(sys.modules.get(top), "__spec__", None)
    if spec is None:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None
    return spec


def _imported_from(top: str) -> list[Path]:
    """The folders (or the file) Python imports ``top`` from."""
    spec = _spec(top)
    if spec is None:
        return []
    locations = list(spec.submodule_search_locations or ())
    return [Path(p) for p in locations if os.path.isdir(p)] or (
        [Path(spec.origin)] if spec.origin and os.path.isfile(spec.origin) else [])


def _is_namespace(top: str) -> bool:
    spec = _spec(top)
    return spec is not None and spec.origin in (None, "namespace")


def _source_files(top: str, root: Path, git: _GitFiles) -> Iterator[tuple[str, Path]]:
    if root.is_file():
        yield root.name, root
        return
    seen: set[str] = set()
    # Links followed (a package's data may be a link into the checkout: cnnx/conf is), once each.
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(d for d in subfolders if not _left_out((d,)) and not d.endswith(".egg-info"))
        for name in sorted(names):
            path = Path(folder) / name
            relative = path.relative_to(root).parts
            if not _left_out(relative) and path.is_file() and git.kept(os.path.realpath(path)):
                yield "/".join((top, *relative)), path


# What git reads as naming another repository, index or object store: set by a hook or a
# shell (git rev-parse --local-env-vars), they would make it list some other checkout's files.
_GIT_LOCATION_VARIABLES = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE", "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE", "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE", "GIT_COMMON_DIR",
)


class _GitFiles:
    """Which files of a source tree a build would take, by the rules of the git repository each
    file lies in (a link or a submodule may lead into another): those it tracks, and new modules
    not yet added (the run may have imported them), but no other untracked file (a run's outputs,
    a credentials file) nor anything ignored. A file in no repository is kept (only dotfiles,
    caches and backups are left out); so is every file of a repository git cannot list, with a
    warning."""

    def __init__(self, distribution: str) -> None:
        self._distribution = distribution
        self._environment = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARIABLES}
        self._listings: dict[str, tuple[set[str], set[str]] | None] = {}
        self._repositories: dict[str, str | None] = {}  # by folder: its files share one

    def kept(self, real_path: str) -> bool:
        folder = os.path.dirname(real_path)
        if folder not in self._repositories:
            self._repositories[folder] = _repository_of(folder)
        top = self._repositories[folder]
        if top is None:
            return True
        if top not in self._listings:
            self._listings[top] = self._listing(top)
        listing = self._listings[top]
        if listing is None:
            return True
        tracked, new_modules = listing
        name = os.path.relpath(real_path, top).replace(os.sep, "/")
        return name in tracked or name in new_modules

    def _listing(self, top: str) -> tuple[set[str], set[str]] | None:
        tracked, why = self._git(top, "ls-files", "-z", "--cached")
        untracked, why = (None, why) if tracked is None else self._git(
            top, "ls-files", "-z", "--others", "--exclude-standard")
        if untracked is None:
            from cnnx.cli import warn

            warn(f"git could not list the files of the checkout {top}, which holds code of {self._distribution} "
                 f"({why[:200]}); the model's wheel holds every file there but dotfiles, caches and backups")
            return None
        return set(tracked), {name for name in untracked if name.endswith(".py")}

    def _git(self, top: str, *args: str) -> tuple[list[str] | None, str]:
        try:
            done = subprocess.run(["git", "-C", top, *args], capture_output=True, timeout=60, env=self._environment)
        except (OSError, subprocess.SubprocessError) as error:
            return None, str(error)
        if done.returncode != 0:
            return None, " ".join(os.fsdecode(done.stderr).split())
        # Bytes, split on NUL: names in any encoding, or holding a carriage return, come out as
        # os.walk gives them.
        return [os.fsdecode(name) for name in done.stdout.split(b"\0") if name], ""


def _repository_of(folder: str) -> str | None:
    """The work tree holding ``folder``: the nearest folder with a ``.git`` (a folder, or the file
    of a submodule or a linked worktree), or None."""
    for candidate in (folder, *map(str, Path(folder).parents)):
        if os.path.lexists(os.path.join(candidate, ".git")):
            return candidate
    return None


def _left_out(parts: tuple[str, ...]) -> bool:
    """Byte code, dotfiles and dot-folders (``.env``, ``.mypy_cache``) and editor backups: no
    build puts them into a wheel, and a dotfile may hold a secret."""
    return "__pycache__" in parts or any(part.startswith(".") for part in parts) or parts[-1].endswith(
        _LEFT_OUT_SUFFIXES)


def _read(path: Path) -> tuple[bytes, bool]:
    return path.read_bytes(), os.access(path, os.X_OK)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"
