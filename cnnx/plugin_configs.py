"""Config groups shipped by plugin distributions, found by Hydra like cnnx's own.

A plugin that ships ``<package>/conf/dataset/imagefolder.yaml`` lets users write
``dataset=imagefolder``. It does so the way Hydra plugins do: a ``SearchPathPlugin`` in the
``hydra_plugins`` namespace package, which Hydra discovers and asks to extend the config
search path. Hydra calls every such plugin for every Hydra app in the environment, so the
plugin calls ``add_plugin_configs`` and its configs join cnnx's app only::

    class MySearchPath(SearchPathPlugin):
        def manipulate_search_path(self, search_path):
            add_plugin_configs(search_path, "my-cnnx-plugin", "my_cnnx_plugin.conf")
"""

from __future__ import annotations

from typing import Any

#: Where cnnx's app reads its own configs (``@hydra.main(config_path="conf")`` in cnnx.app).
CNNX_CONFIGS = "pkg://cnnx.conf"


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
