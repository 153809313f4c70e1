"""What ``cnnx plugins --check`` finds wrong with an option file a plugin ships, before a run
chooses it: a file that is not YAML, a folder that is no cnnx config group (``losss/``, which
no override can reach), a ``type:`` no component of its group registers, option names the
component's factory does not take, a model file without its ``layers:`` mapping.

Each is what a run choosing the file would stop with (``cnnx.component_check`` makes the
registry's checks), or, for a folder, why no run can choose it. A file's own lines are checked
first, where its messages name what it holds; then the run's config as Hydra composes it with the
file chosen (``cnnx.option_file_compose``): the settings schema types every value there, and a
file extending other options (``defaults: [lenet5, _self_]``) says only what it changes of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from cnnx.errors import CnnxError, PluginError, UnknownComponentError, flat_message
from cnnx.option_file_compose import OptionComposer
from cnnx.option_file_yaml import file_of, yaml_problem


def config_groups(search_path: Any) -> list[str]:
    """The config groups of cnnx's app before plugins add theirs: cnnx's own and Hydra's."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra.core.object_type import ObjectType
    from hydra.core.plugins import Plugins

    from cnnx.plugin_configs import is_plugin

    Plugins.instance()  # registers the pkg:// and file:// sources

    def groups(source: Any, group: str = "") -> list[str]:
        found = []
        for name in source.list(group, ObjectType.GROUP):
            path = f"{group}/{name}" if group else name
            found += [path, *groups(source, path)]
        return found

    sources = ConfigRepository(search_path).get_sources()
    return sorted({g for s in sources if not is_plugin(s.provider) and s.available() for g in groups(s)})


def option_file_problem(option_file: Any, groups: list[str], composer: OptionComposer) -> tuple[str, str] | None:
    """(the table's word for it, the line saying what is wrong), or None when nothing is.
    ``composer`` composes, over the search path the file was found on, a run choosing the file."""
    import yaml

    location = file_of(option_file.source, option_file.option)
    try:
        loaded = option_file.source.load_config(option_file.option)
    except yaml.YAMLError as error:
        return "BROKEN", f"{option_file.override}: {location} {yaml_problem(error)}"
    except Exception as error:  # noqa: BLE001 — an unreadable file is the plugin's to fix
        return "BROKEN", f"{option_file.override}: {location}: {flat_message(error)}"
    package = loaded.header.get("package")
    global_package = package is not None and package.startswith("_global_")
    # A folder inside one of cnnx's groups holds options of it (model=cnn/small: the override
    # names the group); a plugin's own group of presets (# @package _global_) is reached with
    # +group=option. Any other folder (losss/, a typo) is one no override reaches.
    group = option_file.group
    if group and group not in groups and not global_package:
        close = difflib.get_close_matches(group, groups, n=1)
        guess = f" (did you mean {close[0]}/?)" if close else ""
        top = ", ".join(g for g in groups if "/" not in g)
        return "UNKNOWN GROUP", (f"{location}: folder {group}/ is no config group of cnnx's{guess}, so no override "
                                 f"chooses this file; cnnx's groups: {top}")
    if group == "hydra" or group.startswith("hydra/"):
        return None  # Hydra's own settings: Hydra checks them
    problem = _content_problem(group, loaded.config, package, lambda: composer.compose(option_file.override))
    return None if problem is None else ("BROKEN", f"{option_file.override}: {location}: {problem}")


def _content_problem(group: str, config: Any, package: str | None, composed: Callable[[], Any]) -> str | None:
    """Why a run choosing an option file with this content (or ``composed``, the run's config
    choosing it) would stop (None if nothing here)."""
    from cnnx.cli import one_line

    if not OmegaConf.is_dict(config):
        return f"holds a {type(config).__name__}; expected a mapping of settings"
    # Unresolved: values may be interpolations of keys other files set; only names are checked.
    content = OmegaConf.to_container(config, resolve=False)
    extends = any(entry != "_self_" for entry in content.pop("defaults", None) or ())
    if package is not None and package.startswith("_global_"):
        # A preset sets keys anywhere (model.layers..., optimizer), for whatever model and data the
        # command line chooses with it: checked alone, since cnnx's defaults may be none of those.
        return _components_problem(OmegaConf.create(content))
    if not group:  # a file in no folder is a primary config, which no override chooses
        return None
    if not extends:  # its own lines first: their messages name what the file holds
        root = OmegaConf.create({})
        OmegaConf.update(root, group.replace("/", "."), content, force_add=True)
        problem = _model_problem(group, content) or _components_problem(root)
        if problem is not None:
            return problem
    # Then as a run gets it: composed over cnnx's config, whose schema types every setting
    # (trainer.epochs: many is refused there), with the options it extends (defaults: [lenet5,
    # _self_]), of which it says only what it changes.
    try:
        root = composed()
    except Exception as error:  # noqa: BLE001 — a base not found, a value the schema refuses…
        return one_line(error) or flat_message(error)
    section = OmegaConf.select(root, group.replace("/", "."), default=None)
    content = OmegaConf.to_container(section, resolve=False) if OmegaConf.is_dict(section) else {}
    return _model_problem(group, content) or _components_problem(root)


def _model_problem(group: str, content: dict[str, Any]) -> str | None:
    if group == "model" and not isinstance(content.get("layers"), dict):
        found = ", ".join(map(str, content)) or "none"
        return f"a model option file needs a layers: mapping (layer name → {{type: ..., ...}}); its keys: {found}"
    return None


def _components_problem(root: Any) -> str | None:
    from cnnx.cli import one_line
    from cnnx.component_check import check_components

    try:
        # Options a file leaves out may come from the defaults it extends, or the run's others.
        check_components(root, (), complete=False)
    except PluginError as error:
        # A name claimed twice, or a plugin that fails to import, is no fault of this file: the
        # entry points' rows name it.
        return flat_message(error) if isinstance(error, UnknownComponentError) else None
    except CnnxError as error:
        return one_line(error)  # always a line for cnnx's own errors
    return None
