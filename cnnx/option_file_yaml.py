"""An option file that is not valid YAML, named in one line: the option that chose it, the file
and the YAML problem with its line.

Hydra loads option files while it composes a run's config and lets PyYAML's error through as a
traceback (over a hundred lines) whose last lines name the file by its path on disk, never the
option (``model=x``) that the user typed or the search-path entry (``pkg://plugin.conf``) that
``cnnx plugins`` lists.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any


def yaml_problem(error: Any) -> str:
    """``line 3: expected ',' or '}', but got '<stream end>' at line 4 (while parsing a flow
    mapping)``: PyYAML's message, whose lines each name the file again, as one line that puts
    first where the construct it could not finish began (an unclosed ``{`` is the user's to close,
    not the end of the file where PyYAML noticed)."""
    problem_mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None)
    if problem_mark is None or problem is None:
        return " ".join(str(error).split())
    first = context_mark or problem_mark
    where = f" at line {problem_mark.line + 1}" if problem_mark.line != first.line else ""
    context = f" ({error.context})" if getattr(error, "context", None) else ""
    return f"line {first.line + 1}: {problem}{where}{context}"


def option_of(config_path: str, is_group: Callable[[str], bool] | None = None) -> str:
    """``model/x`` → ``model=x``; ``hydra/launcher/joblib`` → ``hydra/launcher=joblib``; a
    primary config (``config``) is no option, and keeps its name.

    A file in a sub-folder of a group is an option of that group, typed ``model=cnn/small`` for
    ``model/cnn/small``: Hydra refuses ``model/cnn=small``, no defaults list choosing a
    ``model/cnn``. ``is_group`` says which folders are the app's groups (``app_groups``); the
    innermost of them holding the file is the one a user names. Without it, the file's folder."""
    path = config_path.removesuffix(".yaml")
    folder = path.rpartition("/")[0]
    group = folder
    while group and is_group is not None and not is_group(group):
        group = group.rpartition("/")[0]
    group = group or folder  # in no group of the app's (losss/): named by its own folder
    return f"{group}={path[len(group) + 1:]}" if group else path


def file_of(source: Any, config_path: str) -> str:
    """The file as its search-path entry names it: ``pkg://plugin.conf/model/x.yaml``."""
    name = config_path if config_path.endswith(".yaml") else f"{config_path}.yaml"
    return f"{source.full_path().rstrip('/')}/{name}"


def malformed_option_file(error: BaseException) -> str | None:
    """The one line for a YAML error Hydra raised while loading an option file, or None when
    ``error`` is no such error."""
    import yaml
    from hydra.plugins.config_source import ConfigSource

    from cnnx.plugin_configs import app_groups

    if not isinstance(error, yaml.YAMLError):
        return None
    loading = repository = None
    for frame, _ in traceback.walk_tb(error.__traceback__):
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name != "load_config":
            continue
        if isinstance(owner, ConfigSource):
            loading = owner, frame.f_locals.get("config_path")
        elif callable(getattr(owner, "get_sources", None)):  # Hydra's repository: whose groups the app has
            repository = owner
    if loading is None or not isinstance(loading[1], str):
        return None
    source, config_path = loading
    is_group = app_groups(repository.get_sources()) if repository is not None else None
    return f"{option_of(config_path, is_group)}: {file_of(source, config_path)} {yaml_problem(error)}"


def load_problem(loader: Any, config_path: str) -> str | None:
    """The one line for ``config_path`` (``model/x``) if ``loader`` (a config source, or
    Hydra's repository of them) cannot read it as YAML; None when it loads or is not there."""
    import yaml

    try:
        loader.load_config(config_path)
    except yaml.YAMLError as error:
        return malformed_option_file(error) or f"{option_of(config_path)}: {yaml_problem(error)}"
    except Exception:  # noqa: BLE001 — not there, or no YAML problem: composing the run names it
        return None
    return None


def config_repository(hydra_config: Any) -> Any:
    """Hydra's repository of option files over the search path a run or sweep was composed from."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra.core.plugins import Plugins

    from cnnx.plugin_configs import search_path_of

    Plugins.instance()  # registers the pkg:// and file:// sources (done already inside a run)
    return ConfigRepository(search_path_of(hydra_config))
