"""Modules in the ``hydra_plugins`` namespace that Hydra could not import.

Hydra imports each to find its plugins; one that raises ImportError is skipped with a warning
of several lines at every run, and what it adds is missing: a plugin distribution's search path
(``dataset=imagefolder`` then finds no file), a launcher, a sweeper. ``cnnx plugins --check``
names each on a row of its own, with the error.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
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
    Plugins.instance()  # Hydra's scan, if not done yet: what it imported is in sys.modules
    found = []
    for _, name, _ in pkgutil.walk_packages(hydra_plugins.__path__, "hydra_plugins.", onerror=lambda _: None):
        last = name.rpartition(".")[2]
        if name in sys.modules or (last.startswith("_") and not last.startswith("__")):
            continue  # imported, or one Hydra does not import (its rule for private modules)
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 — whatever it raises is what Hydra met
            detail = " ".join(str(error).split())
            found.append(FailedImport(name, type(error).__name__ + (f": {detail}" if detail else ""), *_owner(name)))
    return found


def _owner(module: str) -> tuple[str, str]:
    """(distribution, version) of the installed distribution whose files hold ``module``."""
    parts = tuple(module.split(".")[:2])
    for name in metadata.packages_distributions().get("hydra_plugins", []):
        dist = metadata.distribution(name)
        if any(file.parts[:2] == parts for file in dist.files or ()):
            return dist.metadata["Name"], dist.version
    return "?", "?"
