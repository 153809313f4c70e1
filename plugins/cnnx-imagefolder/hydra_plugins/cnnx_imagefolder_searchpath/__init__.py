"""Hydra discovers this SearchPathPlugin and adds ``dataset=imagefolder`` to cnnx's app."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class CnnxImagefolderSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from cnnx.plugin_configs import add_plugin_configs

        add_plugin_configs(search_path, "cnnx-imagefolder", "cnnx_imagefolder.conf")
