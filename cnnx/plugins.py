"""`python -m cnnx.plugins` / `cnnx plugins`: every registered component and where it comes from."""

from __future__ import annotations

import sys

from cnnx.registry import GROUPS, installed_components


def format_table() -> str:
    components = installed_components()
    counts: dict[tuple[str, str], int] = {}
    for c in components:
        counts[(c.kind, c.name)] = counts.get((c.kind, c.name), 0) + 1
    rows = [("group", "name", "distribution", "version", "target")]
    for c in components:
        target = c.value + ("   ← CONFLICT: claimed twice" if counts[(c.kind, c.name)] > 1 else "")
        rows.append((GROUPS[c.kind], c.name, c.distribution, c.version, target))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(r[:4])) + "  " + r[4] for r in rows
    )


def main(argv: list[str] | None = None) -> int:
    print(format_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
