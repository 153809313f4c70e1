"""Config groups shipped by plugin distributions, found by Hydra like cnnx's own.

A plugin that ships ``<package>/conf/dataset/imagefolder.yaml`` lets users write
``dataset=imagefolder``. It does so the way Hydra plugins do: a ``SearchPathPlugin`` in the
``hydra_plugins`` namespace package, which Hydra discovers and asks to extend the config
search path. Hydra calls every such plugin for every Hydra app in the environment, so the
plugin calls ``add_plugin_configs`` and its configs join cnnx's app only::

    class MySearchPath(SearchPathPlugin):
        def manipulate_search_path(self, search_path):
            add_plugin_configs(search_path, "my-cnnx-plugin", "my_cnnx_plugin.conf")

Hydra reads the first file of a name on its search path, so a plugin's ``optimizer/adam.yaml``
is never read (cnnx's own comes first), nor the second of two plugins' files of one name.
``plugin_option_files`` finds those; ``cnnx plugins`` marks them and a run choosing one warns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from cnnx.cli import warn
from cnnx.option_file_yaml import option_of

#: Where cnnx's app reads its own configs (``@hydra.main(config_path="conf")`` in cnnx.app).
CNNX_CONFIGS = "pkg://cnnx.conf"
#: The config cnnx's app composes a run from and the Hydra behaviour it asks for, given to its
#: ``@hydra.main`` and used by ``cnnx plugins --check`` to compose option files as a run does.
CNNX_CONFIG_NAME = "config"
CNNX_VERSION_BASE = "1.3"


def is_cnnx_app(search_path: Any) -> bool:
    return any(_package_path(element.path) == CNNX_CONFIGS for element in search_path.get_path())


def _package_path(path: str) -> str:
    # Hydra hands plugins the module-relative form (pkg://cnnx/conf) and normalises it later.
    if path.startswith("pkg://"):
        return "pkg://" + path[len("pkg://"):].strip("/").replace("/", ".")
    return path


def add_plugin_configs(search_path: Any, provider: str, config_package: str) -> None:
    """Append ``pkg://<config_package>`` (after cnnx's own configs) when the app is cnnx's."""
    if is_cnnx_app(search_path):
        search_path.append(provider=provider, path=f"pkg://{config_package}")


#: Search-path providers whose files are not a plugin's: Hydra's own, cnnx's, the ConfigStore's
#: and the user's own folders (--config-dir, hydra.searchpath), which the user placed knowingly.
_NOT_PLUGINS = {"hydra", "main", "schema", "command-line"}


def is_plugin(provider: str) -> bool:
    # Hydra names hydra.searchpath entries "hydra.searchpath in command-line" (or "in main").
    return provider not in _NOT_PLUGINS and not provider.startswith("hydra.searchpath ")


#: Search-path providers of the groups cnnx's app has: Hydra's, cnnx's and the ConfigStore's.
_APP = {"hydra", "main", "schema"}


def app_groups(sources: Any) -> Callable[[str], bool]:
    """Whether a folder is one of the config groups of cnnx's app, which other folders' files
    (a plugin's, the user's) join: ``model`` is, ``model/cnn`` of a plugin's ``model/cnn/small``
    is not (``hydra/sweeper/sampler``, in the ConfigStore, is)."""
    own = [source for source in sources if source.provider in _APP and source.available()]
    return functools.cache(lambda folder: any(source.is_group(folder) for source in own))


@dataclass(frozen=True)
class OptionFile:
    """One option file a plugin adds (``optimizer/lamb``), and whose file Hydra reads instead."""

    option: str
    override: str  # as a user types it: model=cnn/small for model/cnn/small (option_of)
    distribution: str
    version: str
    location: str
    read_instead: str | None  # "cnnx's own" or "cnnx-contrib 0.2.0's"; None when this one is read
    source: Any = field(default=None, compare=False, repr=False)  # Hydra's ConfigSource, to load it

    @property
    def group(self) -> str:
        """The config group a user names to choose it (``model``); "" for a file in no folder."""
        return self.override.rpartition("=")[0]

    def shadowed_message(self) -> str | None:
        if self.read_instead is None:
            return None
        origin = f"{self.distribution} {self.version}".strip()
        return (f"{self.override} reads {self.read_instead} {self.option}.yaml, never the file of that name "
                f"in plugin distribution {origin} ({self.location}); rename that option file")


def plugin_option_files(search_path: Any, wanted: Callable[[str], bool] = lambda option: True) -> list[OptionFile]:
    """The option files plugins add to ``search_path`` (those ``wanted`` of them), in search order."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the pkg:// and file:// sources (done already inside a run)
    every = ConfigRepository(search_path).get_sources()
    is_group = app_groups(every)
    sources = [s for s in every if s.provider != "schema" and s.available()]
    found = []
    for i, source in enumerate(sources):
        if not is_plugin(source.provider):
            continue
        for option in filter(wanted, _options(source)):
            first = next((s for s in sources[:i] if s.is_config(option)), None)
            name, version = _distribution(source.provider, source.path)
            found.append(OptionFile(option, option_of(option, is_group), name, version, source.full_path(),
                                    None if first is None else _owner(first), source))
    return found


def installed_search_path() -> Any:
    """The search path Hydra builds for cnnx's app, plugins' entries included."""
    from hydra._internal.utils import create_config_search_path

    return create_config_search_path(CNNX_CONFIGS)


def search_path_of(hydra_config: Any) -> Any:
    """The search path a run or sweep was composed from (``hydra.runtime.config_sources``)."""
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

    path = ConfigSearchPathImpl()
    for source in hydra_config.runtime.config_sources:
        path.append(source.provider, f"{source.schema}://{source.path}")
    return path


_warned: set[str] = set()


def warn_shadowed_choices(hydra_config: Any) -> None:
    """One line per option this run chose whose plugin file Hydra never reads (once per process:
    a sweep's jobs share it)."""
    chosen = {f"{group}/{name}" for group, name in hydra_config.runtime.choices.items() if isinstance(name, str)}
    for option_file in plugin_option_files(search_path_of(hydra_config), chosen.__contains__):
        message = option_file.shadowed_message()
        if message and message not in _warned:
            _warned.add(message)
            warn(message)


def _options(source: Any, group: str = "") -> list[str]:
    from hydra.core.object_type import ObjectType

    join = (lambda name: f"{group}/{name}") if group else (lambda name: name)
    options = [join(name) for name in source.list(group, ObjectType.CONFIG)]
    for subgroup in source.list(group, ObjectType.GROUP):
        options += _options(source, join(subgroup))
    return options


def _owner(source: Any) -> str:
    if source.provider == "main":
        return "cnnx's own"
    name, version = _distribution(source.provider, source.path)
    return f"{name} {version}'s" if version else f"{name}'s"


@functools.cache
def _distribution(provider: str, path: str) -> tuple[str, str]:
    """(name, version) of the distribution that ships the config folder; the README has plugins
    pass their distribution's name as the provider, so the slow lookup is the fallback."""
    try:
        return provider, metadata.version(provider)
    except metadata.PackageNotFoundError:
        pass
    for name in metadata.packages_distributions().get(path.split(".")[0], []):
        return name, metadata.version(name)
    return provider, ""
