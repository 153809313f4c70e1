"""`python -m cnnx.plugins` / `cnnx plugins`: every registered component and where it comes from.

Listing imports no component (discovery is lazy), only Hydra's SearchPathPlugins, to list the
option files plugins add (``optimizer=lamb``) and mark those Hydra never reads (SHADOWED: cnnx
or an earlier plugin ships a file of the same name). Each option is named as a user chooses it
(``model=cnn/small`` for ``model/cnn/small.yaml``). ``--check`` imports every component and
loads every option file (its own lines, then as Hydra composes it for a run), and reports the ones that
fail — a broken or conflicting plugin, a file that is not YAML or names what no component takes
(BROKEN), a folder that is no config group (UNKNOWN GROUP), a ``hydra_plugins`` module Hydra
could not import (BROKEN) — with the error a run using them would print, exiting 1 if there are
any problems. Entry points in a ``cnnx…`` group that cnnx
does not read (a mistyped ``cnnx.layer``) are listed too, marked UNKNOWN GROUP.
"""

from __future__ import annotations

import argparse
import sys

from cnnx.cli import report_user_errors
from cnnx.errors import PluginError
from cnnx.hydra_plugin_imports import failed_imports, hidden_portions
from cnnx.option_file_check import config_groups, option_file_problem
from cnnx.option_file_compose import OptionComposer
from cnnx.plugin_configs import installed_search_path, plugin_option_files
from cnnx.registry import GROUPS, Component, Registry, installed_components, misplaced_entry_points


def problem(component: Component) -> str | None:
    """Why a run using this component would stop (None when it loads)."""
    try:
        Registry(component.kind).get(component.name)
    except PluginError as exc:
        return str(exc)
    return None


def format_table(check: bool = False) -> str:
    components = installed_components()
    counts: dict[tuple[str, str], int] = {}
    for c in components:
        counts[(c.kind, c.name)] = counts.get((c.kind, c.name), 0) + 1
    rows = [("group", "name", "distribution", "version", "target")]
    for c in components:
        target = c.value + ("   ← CONFLICT: claimed twice" if counts[(c.kind, c.name)] > 1 else "")
        if check and counts[(c.kind, c.name)] == 1:
            error = problem(c)
            target += f"   ← BROKEN: {error}" if error else "   ok"
        rows.append((GROUPS[c.kind], c.name, c.distribution, c.version, target))
    read = ", ".join(GROUPS.values())
    for ep in misplaced_entry_points():
        dist = ep.dist
        rows.append((ep.group, ep.name, dist.metadata["Name"] if dist else "?", dist.version if dist else "?",
                     f"{ep.value}   ← UNKNOWN GROUP: cnnx reads {read}"))
    for hidden in hidden_portions():  # its configs are missing from the rows below
        rows.append(("hydra_plugins", ", ".join(m.removeprefix("hydra_plugins.") for m in hidden.modules),
                     hidden.distribution, hidden.version, f"{hidden.source}   ← BROKEN: {hidden.advice()}"))
    if check:
        for failed in failed_imports():
            rows.append(("hydra_plugins", failed.module.removeprefix("hydra_plugins."), failed.distribution,
                         failed.version, f"{failed.module}   ← BROKEN: fails to import ({failed.error}); Hydra "
                                         "skips it, so what it adds (configs' search path, launcher, sweeper) is "
                                         "missing"))
    search_path = installed_search_path()
    groups = config_groups(search_path) if check else []
    composer = OptionComposer(search_path) if check else None
    for option_file in plugin_option_files(search_path):
        target = f"{option_file.location}/{option_file.option}.yaml"
        shadowed = option_file.shadowed_message()
        if shadowed:
            target += f"   ← SHADOWED: {shadowed}"
        elif check:
            found = option_file_problem(option_file, groups, composer)
            target += f"   ← {found[0]}: {found[1]}" if found else "   ok"
        rows.append(("config", option_file.override, option_file.distribution, option_file.version, target))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(r[:4])) + "  " + r[4] for r in rows
    )


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnnx plugins", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="import every component and report the ones that fail (exit 1)")
    args = parser.parse_args(argv)
    table = format_table(check=args.check)
    print(table, flush=True)  # a closed pipe (`| head`) raises here, where main reports it
    problems = ("BROKEN", "CONFLICT", "UNKNOWN GROUP", "SHADOWED")
    return 1 if args.check and any(f"← {word}" in table for word in problems) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
