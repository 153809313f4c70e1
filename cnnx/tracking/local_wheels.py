"""Wheels, inside a logged model, of the distributions it needs that no package index holds.

cnnx is installed from its checkout (``pip install .``), and so are its plugins: a model whose
``requirements.txt`` pinned ``cnnx==0.2.1`` sent ``mlflow models serve`` (its uv or virtualenv
environments), ``build-docker`` and serving platforms to an index without such a release. So
a distribution that pip installed from a local folder or file — as its ``direct_url.json``
records (PEP 610) — is packed into a wheel in the model's ``wheels/`` folder, and
``requirements.txt`` names that file. MLflow installs a model's requirements from within the
model's folder, so the relative path resolves wherever the model goes. Distributions from an
index, a VCS or a URL stay pinned by version: those sources can be reached again.

The wheel is rebuilt from what is installed, so it is exactly the code the run used: the files
its RECORD lists for a regular install, or its packages' folders in the source tree for an
editable one, with its own metadata (``METADATA``, and ``entry_points.txt``, through which
plugins register). Only pure-Python distributions are packed (tag ``py3-none-any``); one with
compiled files stays pinned by version.
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
import zipfile
from collections.abc import Iterator
from importlib.metadata import Distribution, PackageNotFoundError, distributions
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

#: The folder, inside the model, holding the wheels; requirements.txt names files in it.
WHEELS_DIR = "wheels"

# Metadata files a wheel's .dist-info may not carry over from an installation: the installer's
# own records (PEP 376, PEP 610) and the two files a wheel must hold as this packing writes them.
_INSTALLATION_RECORDS = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "WHEEL"}
_COMPILED_SUFFIXES = (".so", ".pyd", ".dll", ".dylib")
# A fixed timestamp, so the same installed files give the same wheel bytes in every run.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def local_source(dist: Distribution) -> Path | None:
    """The local folder or file pip installed ``dist`` from, or None (an index, a VCS, a URL,
    or an installer that keeps no record)."""
    try:
        recorded = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        return None
    if not isinstance(recorded, dict) or "vcs_info" in recorded:
        return None
    url = recorded.get("url")
    if not isinstance(url, str) or not url.startswith("file:"):
        return None
    return Path(url2pathname(urlsplit(url).path))


def requirement_for(name: str, folder: Path) -> str:
    """The ``requirements.txt`` line installing distribution ``name`` as it is installed here:
    a wheel written into ``folder / WHEELS_DIR`` (the model's folder) when it came from a local
    source and can be packed, else ``name==version``."""
    dist = installation(name)
    if local_source(dist) is not None:
        wheel = pack_wheel(dist, folder / WHEELS_DIR)
        if wheel is not None:
            return f"{WHEELS_DIR}/{wheel.name}"
    return f"{dist.metadata['Name']}=={dist.version}"


def installation(name: str) -> Distribution:
    """What an installer recorded of distribution ``name``: run from a checkout, the working
    directory comes first on ``sys.path``, and the ``*.egg-info`` a build left there describes
    no installation (no ``direct_url.json``, and perhaps an older version)."""
    found = list(distributions(name=name))
    if not found:
        raise PackageNotFoundError(name)
    return next((dist for dist in found if dist.read_text("INSTALLER") is not None), found[0])


def pack_wheel(dist: Distribution, folder: Path) -> Path | None:
    """Write the installed ``dist`` as a wheel into ``folder``; None when it cannot be packed
    (compiled files, no RECORD, or no files of its own found)."""
    record = dist.files
    if record is None:
        return None
    info_dir = f"{wheel_name(dist.metadata['Name'])}-{dist.version.replace('-', '_')}.dist-info"
    files = dict(_installed_files(dist, record))
    if not files or any(name.endswith(_COMPILED_SUFFIXES) for name in files):
        return None
    for path in record:
        if len(path.parts) == 2 and path.parts[0].endswith(".dist-info") and path.name not in _INSTALLATION_RECORDS:
            files[f"{info_dir}/{path.name}"] = Path(str(dist.locate_file(path)))
        elif len(path.parts) > 2 and path.parts[0].endswith(".dist-info") and path.parts[1] == "licenses":
            files[f"{info_dir}/{'/'.join(path.parts[1:])}"] = Path(str(dist.locate_file(path)))
    if f"{info_dir}/METADATA" not in files:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{info_dir[:-len('.dist-info')]}-py3-none-any.whl"
    contents = {name: files[name].read_bytes() for name in sorted(files)}
    contents[f"{info_dir}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: cnnx (repacked from its installation)\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n").encode()
    rows = [(name, _record_hash(data), str(len(data))) for name, data in contents.items()]
    record_text = io.StringIO()
    csv.writer(record_text, lineterminator="\n").writerows([*rows, (f"{info_dir}/RECORD", "", "")])
    contents[f"{info_dir}/RECORD"] = record_text.getvalue().encode()
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            entry = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    partial.replace(target)
    return target


def wheel_name(name: str) -> str:
    """A distribution name as wheel file names spell it (``cnnx-contrib`` → ``cnnx_contrib``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _installed_files(dist: Distribution, record: list) -> Iterator[tuple[str, Path]]:
    """(name in the wheel, file) for each file of ``dist``'s own packages and modules."""
    listed = False
    for path in record:
        parts = path.parts
        if ".." in parts or parts[0].endswith(".dist-info") or _generated(parts) or parts[0].startswith("__editable__"):
            continue
        listed = True
        yield "/".join(parts), Path(str(dist.locate_file(path)))
    if not listed:  # an editable install: its RECORD lists only the hook that finds the source
        yield from _editable_files(dist)


def _editable_files(dist: Distribution) -> Iterator[tuple[str, Path]]:
    source = local_source(dist)
    if source is None or not source.is_dir():
        return
    for top in (dist.read_text("top_level.txt") or "").split():
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        # A namespace package (hydra_plugins) has portions from other distributions too: only
        # the one in this distribution's source tree is its own.
        roots = [Path(p) for p in spec.submodule_search_locations or ()] or [Path(spec.origin or "")]
        for root in roots:
            if not root.resolve().is_relative_to(source.resolve()):
                continue
            if root.is_file():
                yield root.name, root
                continue
            # Links followed: a package's data may be a link into the checkout (cnnx/conf is).
            for folder, _, names in sorted(os.walk(root, followlinks=True)):
                for name in sorted(names):
                    relative = (Path(folder) / name).relative_to(root).parts
                    if not _generated(relative):
                        yield "/".join((top, *relative)), Path(folder) / name


def _generated(parts: tuple[str, ...]) -> bool:
    return "__pycache__" in parts or parts[-1].endswith((".pyc", ".pyo"))


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"

