"""The key and value of a command-line override as typed, without Hydra's parser.

``+key=v`` adds, ``++key=v`` adds or sets, ``~key`` or ``~key=v`` deletes: all name ``key``.
Hydra's parser would also read the value's grammar (sweeps, functions, quoting), which the
callers here do not need and which costs a parser per call; they want the key as the user
wrote it and the value's text.
"""

from __future__ import annotations


def override_key_value(override: str) -> tuple[str, str]:
    """``"++model.layers.fc1.type=dense"`` → ``("model.layers.fc1.type", "dense")``;
    ``"~tracking"`` → ``("tracking", "")``."""
    key, _, value = override.lstrip("+~").partition("=")
    return key, value


def override_key(override: str) -> str:
    return override_key_value(override)[0]
