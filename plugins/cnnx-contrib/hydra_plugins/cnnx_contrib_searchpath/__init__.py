"""Hydra discovers this SearchPathPlugin and adds cnnx-contrib's config groups to cnnx's app
(``model=separable_cnn``, ``loss=focal``, ``optimizer=lamb``, ``dataset=augmented``)."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class CnnxContribSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from cnnx.plugin_configs import add_plugin_configs

        add_plugin_configs(search_path, "cnnx-contrib", "cnnx_contrib.conf")
