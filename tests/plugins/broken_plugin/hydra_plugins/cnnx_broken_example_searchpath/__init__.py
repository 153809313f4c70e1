"""Puts the option files named like cnnx's and cnnx-contrib's on cnnx's search path."""

from hydra.plugins.search_path_plugin import SearchPathPlugin


class CnnxBrokenExampleSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path):
        from cnnx.plugin_configs import add_plugin_configs

        add_plugin_configs(search_path, "cnnx-broken-example", "cnnx_broken_example.conf")
