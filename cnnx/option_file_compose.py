"""An option file as a run choosing it gets it, for ``cnnx plugins --check``: composed by Hydra
from cnnx's config with the option chosen.

There the settings schema types every value (``trainer: {epochs: many}`` is refused), and a file
that extends others (``defaults: [lenet5, _self_]``) meets what it changes of them: its own lines
may be fine where the result is not, as a misspelt key of a layer the base gives its type
(``conv1: {kernel_sz: 3}``, ``conv1: {tpye: dense}``), a type changed under the base's options
(``conv1: {type: dense}`` keeps conv2d's ``kernel_size``), a base that is not there.
"""
from __future__ import annotations

import functools
from typing import Any


class OptionComposer:
    """Composes runs from one search path; Hydra is set up at the first compose, so a listing
    without ``--check`` pays nothing."""

    def __init__(self, search_path: Any) -> None:
        from hydra import version

        from cnnx.plugin_configs import CNNX_VERSION_BASE

        self._search_path = search_path
        # A run asks for this Hydra behaviour; without it Hydra falls back to 1.1's, for every
        # file this process loads afterwards, raw or composed.
        version.setbase(CNNX_VERSION_BASE)

    def compose(self, override: str) -> Any:
        """The config of a run given ``override`` (``model=x``), with ``+`` before it when
        cnnx's config chooses nothing in that group, as a user would type it."""
        group = override.partition("=")[0]
        return self._compose([override if group in self._chosen_groups else f"+{override}"])

    @functools.cached_property
    def _chosen_groups(self) -> set[str]:
        return set(self._compose([]).hydra.runtime.choices)

    @functools.cached_property
    def _loader(self) -> Any:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.plugins import Plugins

        from cnnx import config_schema, config_store_sharing

        Plugins.instance()  # registers the pkg:// and file:// sources
        config_schema.register()  # cnnx's config names its schema, which cnnx.app registers
        config_store_sharing.install()  # no copy of the ConfigStore per compose, as in a run
        return ConfigLoaderImpl(config_search_path=self._search_path)

    def _compose(self, overrides: list[str]) -> Any:
        from hydra.types import RunMode

        from cnnx.plugin_configs import CNNX_CONFIG_NAME

        return self._loader.load_configuration(CNNX_CONFIG_NAME, overrides, RunMode.RUN)
