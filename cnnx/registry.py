"""Entry-point discovery for layers, losses, optimizers, schedulers and datasets.

Built-ins register exactly as third-party plugins do, through ``[project.entry-points]``.
Discovery is lazy (nothing is imported until a name is used), so a plugin that fails to
import, or two distributions claiming one name, break only that name — with an error naming
the distributions involved — never cnnx or the other plugins.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any

from cnnx.errors import (
    ConfigError, DataError, DataSplitsError, PluginError, UnknownComponentError, UnknownOptionError,
)

#: config word → entry-point group
GROUPS = {
    "layer": "cnnx.layers",
    "loss": "cnnx.losses",
    "optimizer": "cnnx.optimizers",
    "scheduler": "cnnx.schedulers",
    "dataset": "cnnx.datasets",
}


@dataclass(frozen=True)
class Component:
    """One registered name: where it comes from, and (once loaded) what it is."""

    kind: str
    name: str
    value: str
    distribution: str
    version: str

    @property
    def origin(self) -> str:
        return f"{self.distribution} {self.version}"


class Registry:
    def __init__(self, kind: str):
        if kind not in GROUPS:
            raise ValueError(f"unknown component kind {kind!r}; expected one of {sorted(GROUPS)}")
        self.kind = kind
        self.group = GROUPS[kind]

    # -- discovery -------------------------------------------------------------------------
    def claims(self) -> dict[str, list[Component]]:
        """Every name with all the distributions that register it (more than one = conflict)."""
        return _discover(self.group, self.kind)

    def names(self) -> list[str]:
        return sorted(self.claims())

    def component(self, name: str, where: str | None = None) -> Component:
        claims = self.claims()
        if name not in claims:
            raise UnknownComponentError(self._unknown_message(name, where, claims))
        found = claims[name]
        if len(found) > 1:
            plugins = [c for c in found if normalise_distribution(c.distribution) != "cnnx"]
            if len(plugins) < len(found):
                # "Uninstall one of them" would offer cnnx itself: the plugin is what to change.
                others = " and ".join(sorted(c.origin for c in plugins))
                raise PluginError(
                    f"{self.kind} {name!r}{_at(where)} is a cnnx built-in, and {others} registers "
                    f"the same name; a plugin cannot replace a built-in: rename its entry point in "
                    f"{self.group!r} (or uninstall {' and '.join(sorted(c.distribution for c in plugins))})"
                )
            owners = " and ".join(sorted(c.origin for c in found))
            raise PluginError(
                f"{self.kind} {name!r}{_at(where)} is registered by more than one distribution "
                f"({owners}); uninstall one of them"
            )
        return found[0]

    def label(self, name: str) -> str:
        """``layer 'prelu' (from my-cnnx-kit 0.1.0)``: how messages name a component."""
        try:
            return f"{self.kind} {name!r} (from {self.component(name).origin})"
        except PluginError:
            return f"{self.kind} {name!r}"

    def get(self, name: str, where: str | None = None) -> Any:
        """The registered object (class or function) for ``name``, imported on first use."""
        if not isinstance(name, str):
            raise ConfigError(
                f"{self.kind} type{_at(where)} must be a name (string), got {name!r}; "
                f"available: {', '.join(self.names())}"
            )
        return _load(self.component(name, where))

    def check(self, name: str, options: Mapping[str, Any], config_key: str, /, *supplied: str,
              complete: bool = True, hint: bool = True) -> Any:
        """The registered factory for ``name``, once its option names are known to fit it;
        ``supplied``: the arguments the caller passes besides the options; ``complete``: whether
        ``options`` must hold every option without a default. Cheap: nothing is built, so a sweep
        makes it before its first job (``cnnx.component_check``)."""
        factory = self.get(name, config_key)
        check_options(factory, options, config_key, f"{self.kind} {name!r}", supplied=set(supplied),
                      complete=complete, hint=hint)
        return factory

    def create(self, name: str, options: Mapping[str, Any], config_key: str, /, **context: Any) -> Any:
        """Call the registered factory with ``options``, checking option names first.

        ``context`` holds arguments the caller supplies (e.g. ``named_parameters`` for an
        optimizer); they are not user options, so they never appear in error messages.
        """
        factory = self.check(name, options, config_key, *context)
        try:
            return factory(**context, **options)
        except DataSplitsError as exc:
            # Named as users know the loader (config and `cnnx plugins`), not by the name it gave.
            raise DataError(f"{self.label(name)} {exc.problem}") from None
        except ConfigError as exc:
            # Components validate their own options but do not know where in the config
            # they sit: name the key so the user can find the value to change.
            if config_key in str(exc):
                raise
            raise ConfigError(f"{config_key}: {exc}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError) or type(exc).__module__.startswith("cnnx"):
                raise
            raise ConfigError(f"invalid options at {config_key} for {self.kind} {name!r}: {exc}") from exc
        except OSError as exc:
            # A plugin's loader given a wrong path (np.load, open): the user's to fix, not a bug.
            what = f"'{exc.filename}': {exc.strerror}" if exc.filename else f"{type(exc).__name__}: {exc}"
            raise ConfigError(f"{self.label(name)} at {config_key} cannot read {what}") from exc

    def _unknown_message(self, name: str, where: str | None, claims: dict[str, list[Component]]) -> str:
        by_origin: dict[str, list[str]] = {}
        for n, comps in sorted(claims.items()):
            for comp in comps:
                by_origin.setdefault(comp.origin, []).append(n)
        available = "; ".join(f"{', '.join(ns)} (from {origin})" for origin, ns in by_origin.items())
        hints = [f"{ep.dist.metadata['Name'] if ep.dist else 'a distribution'} registers {name!r} in the "
                 f"entry-point group {ep.group!r}, but {self.kind}s are read from {self.group!r}"
                 for ep in misplaced_entry_points(self.group) if ep.name == name]
        # Also names that only add a word (focal → focal_loss), which difflib scores too low.
        close = difflib.get_close_matches(name, claims, n=3, cutoff=0.75) + [
            n for n in claims if n != name and (n.lower() == name.lower() or
                                                 (len(name) >= 3 and n.lower().split("_")[0] == name.lower()))]
        guess = f" (did you mean {' or '.join(map(repr, dict.fromkeys(close)))}?)" if close else ""
        return (f"unknown {self.kind} type {name!r}{_at(where)}{guess}; " + "".join(h + "; " for h in hints)
                + f"available: {available or 'none installed'}")


def check_options(
    factory: Callable[..., Any],
    options: Mapping[str, Any],
    where: str,
    what: str,
    supplied: set[str] = frozenset(),  # type: ignore[assignment]
    complete: bool = True,
    hint: bool = True,
) -> None:
    """Reject unknown and (when ``options`` should be ``complete``) missing option names with
    the config key and the accepted names; ``hint``: that a preset or group may have set the
    option (not so when the user typed it on the command line)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unnamed = sorted(supplied - set(params))
    if unnamed:  # what cnnx passes by name (torch's optimizers call it params): the plugin's to rename
        raise PluginError(f"{what} takes ({', '.join(n for n in params if n != 'self')}), but cnnx passes it "
                          f"{unnamed[0]}=…; name that argument {unnamed[0]} (README: Write a plugin)")
    accepted = [
        n for n, p in params.items()
        if n not in supplied and n != "self"
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    for key in options:
        if key not in accepted:
            raise UnknownOptionError(
                f"unknown option {where}.{key} for {what}; accepted: {', '.join(accepted) or 'none'}",
                f"{where}.{key}", maybe_inherited=hint,
            )
    for n in accepted if complete else ():
        p = params[n]
        if p.default is inspect.Parameter.empty and n not in options:
            raise ConfigError(f"missing option {where}.{n} for {what}; required: {n}")


def _at(where: str | None) -> str:
    return f" at {where}" if where else ""


@cache
def _discover(group: str, kind: str) -> dict[str, list[Component]]:
    claims: dict[str, list[Component]] = {}
    seen: set[tuple[str, str, str]] = set()
    for ep in metadata.entry_points(group=group):
        dist = ep.dist
        dist_name = dist.metadata["Name"] if dist is not None else "unknown distribution"
        version = dist.version if dist is not None else "?"
        # The same distribution can be visible twice (e.g. an editable install next to a
        # leftover egg-info); that is one claim, not a conflict.
        key = (ep.name, ep.value, normalise_distribution(dist_name))
        if key in seen:
            continue
        seen.add(key)
        claims.setdefault(ep.name, []).append(Component(kind, ep.name, ep.value, dist_name, version))
    return claims


def misplaced_entry_points(group: str | None = None) -> list[metadata.EntryPoint]:
    """Entry points in a ``cnnx…`` group that cnnx does not read (``cnnx.layer``), or, with
    ``group``, in any cnnx group but that one: where a plugin's mistyped group puts its names."""
    read = set(GROUPS.values())
    # Per distribution: Python 3.10 and 3.11's entry_points() without a group is a mapping.
    found = [ep for dist in metadata.distributions() for ep in dist.entry_points
             if ep.group.lower().startswith("cnnx") and ep.group != group
             and (group is not None or ep.group not in read)]
    # One distribution visible twice (a plugin's source folder holds the egg-info that
    # `pip install .` left there) is one mistake, as in _discover.
    unique = {(ep.group, ep.name, ep.value, normalise_distribution(ep.dist.metadata["Name"]) if ep.dist else ""): ep
              for ep in found}
    return list(unique.values())


def normalise_distribution(dist_name: str) -> str:
    return dist_name.lower().replace("_", "-")


@cache
def _load(component: Component) -> Any:
    try:
        obj = metadata.EntryPoint(component.name, component.value, GROUPS[component.kind]).load()
    except Exception as exc:  # any failure of a plugin's import must stay the plugin's
        raise PluginError(
            f"{component.kind} {component.name!r} from distribution {component.origin} failed to "
            f"import ({component.value}): {type(exc).__name__}: {exc}"
        ) from exc
    problem = _contract_violation(component.kind, obj)
    if problem:
        raise PluginError(
            f"{component.kind} {component.name!r} from distribution {component.origin} points at "
            f"{component.value}, which {problem}"
        )
    return obj


def _contract_violation(kind: str, obj: Any) -> str | None:
    """Why ``obj`` cannot serve as a ``kind`` (None when it can), checked once at import so
    that a wrong class fails by name, with its distribution, instead of deep in training."""
    if kind == "layer":
        from cnnx.engine.module import Module

        if not (isinstance(obj, type) and issubclass(obj, Module)):
            return f"is {_describe(obj)}, not a subclass of cnnx.engine.module.Module"
    elif kind in ("optimizer", "scheduler"):
        if not (isinstance(obj, type) and callable(getattr(obj, "step", None))):
            return f"is {_describe(obj)}, not a class with a step() method"
    elif not callable(obj):
        return f"is {_describe(obj)}, not a class or function"
    return None


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if callable(obj):
        return f"the function {getattr(obj, '__qualname__', obj)!r}"
    return f"a {type(obj).__name__} object"


def refresh() -> None:
    """Forget discovered entry points (after installing a plugin in a running process)."""
    _discover.cache_clear()
    _load.cache_clear()


layers = Registry("layer")
losses = Registry("loss")
optimizers = Registry("optimizer")
schedulers = Registry("scheduler")
datasets = Registry("dataset")


def installed_components() -> list[Component]:
    """Every registered component of every group, conflicts included, sorted for listing."""
    found = [c for reg in (layers, losses, optimizers, schedulers, datasets)
             for comps in reg.claims().values() for c in comps]
    return sorted(found, key=lambda c: (c.kind, c.name, c.distribution))


def plugin_distributions() -> dict[str, str]:
    """Distribution name → version for everything that registers a cnnx component."""
    return {c.distribution: c.version for c in installed_components()}
