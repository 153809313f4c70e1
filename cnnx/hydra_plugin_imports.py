"""Modules in the ``hydra_plugins`` namespace that Hydra could not import.

Hydra imports each to find its plugins; one that raises ImportError is skipped with a warning
of several lines at every run, and what it adds is missing: a plugin distribution's search path
(``dataset=imagefolder`` then finds no file), a launcher, a sweeper. ``cnnx plugins --check``
names each on a row of its own, with the error. One that raises anything else stops Hydra's scan,
and with it every run and ``cnnx plugins``: ``scan_stopped_by`` makes that one line.

Hydra lists the namespace's modules by its folders (``pkgutil``). A distribution installed
editable by setuptools in its default mode is imported through an import hook, which adds no
folder: its ``hydra_plugins`` module is never listed, so the configs it adds are missing from
every run, with no warning (hydra#2359). ``hidden_portions`` finds such distributions; their
``strict`` (or ``compat``) editable mode installs a folder Hydra lists.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class FailedImport:
    module: str  # hydra_plugins.my_pkg_searchpath
    error: str  # ModuleNotFoundError: No module named 'x'
    distribution: str  # "?" when no installed distribution holds it (a folder on sys.path)
    version: str


def failed_imports() -> list[FailedImport]:
    """The ``hydra_plugins`` modules Hydra's scan left out of ``sys.modules``, each imported
    again here for its error."""
    from hydra.core.plugins import Plugins

    try:
        import hydra_plugins
    except ImportError:
        return []  # no Hydra plugin installed
    with warnings.catch_warnings():  # its five lines about a module that fails: the row says it
        warnings.filterwarnings("ignore", category=UserWarning, module="hydra.core.plugins")
        Plugins.instance()  # Hydra's scan, if not done yet: what it imported is in sys.modules
    found = []
    for _, name, _ in pkgutil.walk_packages(hydra_plugins.__path__, "hydra_plugins.", onerror=lambda _: None):
        last = name.rpartition(".")[2]
        if name in sys.modules or (last.startswith("_") and not last.startswith("__")):
            continue  # imported, or one Hydra does not import (its rule for private modules)
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 — ImportError, as Hydra met it (any other error stopped its scan)
            found.append(FailedImport(name, described(error), *_owner(name)))
    return found


def described(error: BaseException) -> str:
    """``ModuleNotFoundError: No module named 'x'``, on one line."""
    detail = " ".join(str(error).split())
    return type(error).__name__ + (f": {detail}" if detail else "")


def scan_stopped_by(error: BaseException) -> str | None:
    """The line for an error raised inside Hydra's plugin scan (None for any other): the module
    it was importing, its distribution and the error, from the scan's own frame."""
    traceback = error.__traceback__
    while traceback is not None:
        code = traceback.tb_frame.f_code
        if code.co_name == "_scan_all_plugins" and code.co_filename.endswith(os.path.join("hydra", "core", "plugins.py")):
            module = traceback.tb_frame.f_locals.get("modname")
            if not isinstance(module, str):
                return None
            distribution, version = _owner(module)
            spec = importlib.util.find_spec(module)
            where = f"{distribution} {version}" if distribution != "?" else (spec.origin if spec else "?")
            return (f"Hydra plugin module {module} ({where}) fails to import ({described(error)}); Hydra stops "
                    f"at it, so no run can start: fix or uninstall {distribution if distribution != '?' else 'it'}")
        traceback = traceback.tb_next
    return None


def _owner(module: str) -> tuple[str, str]:
    """(distribution, version) of the installed distribution whose files hold ``module``, a
    package or a single-file module."""
    namespace, _, rest = module.partition(".")
    held = {(namespace, rest.split(".")[0]), (namespace, rest.split(".")[0] + ".py")}
    for name in metadata.packages_distributions().get(namespace, []):
        dist = metadata.distribution(name)
        if any(tuple(file.parts[:2]) in held for file in dist.files or ()):
            return dist.metadata["Name"], dist.version
    return "?", "?"


@dataclass(frozen=True)
class HiddenPortion:
    distribution: str
    version: str
    modules: tuple[str, ...]  # hydra_plugins.<name> of its own that Hydra's scan cannot list
    source: str  # the folder it was installed from

    def advice(self) -> str:
        return (f"{self.distribution} {self.version} is installed editable through setuptools' import hook, "
                f"which hides its {', '.join(self.modules)} from Hydra's plugin scan, so the configs it adds are "
                f"missing from every run: reinstall it with pip install -e {self.source} --config-settings "
                f"editable_mode=strict")


def hidden_portions() -> list[HiddenPortion]:
    """Distributions installed editable from a folder holding a ``hydra_plugins`` package whose
    modules Hydra's scan, listing the namespace's folders, does not see."""
    from cnnx.tracking.local_wheels import direct_url, local_source

    try:
        import hydra_plugins
        listed = {module.name for module in pkgutil.iter_modules(hydra_plugins.__path__)}
    except ImportError:
        listed = set()
    found: dict[str, HiddenPortion] = {}
    for dist in metadata.distributions():
        name, recorded = dist.metadata["Name"], direct_url(dist) or {}
        editable = isinstance(recorded.get("dir_info"), dict) and recorded["dir_info"].get("editable") is True
        source = local_source(dist) if editable else None
        folders = [] if source is None or name in found else [
            folder for folder in (source / "hydra_plugins", source / "src" / "hydra_plugins") if folder.is_dir()]
        if not folders:
            continue
        own = sorted(module.name for module in pkgutil.iter_modules([str(folder) for folder in folders]))
        hidden = tuple(f"hydra_plugins.{module}" for module in own if module not in listed)
        if hidden:
            found[name] = HiddenPortion(name, dist.version, hidden, str(source))
    return list(found.values())
