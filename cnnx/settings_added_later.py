"""Config settings added, or whose defaults changed, after runs began recording their config.

Checkpoints keep the config they trained with (resuming refuses a changed one), and sweep jobs
are matched to their earlier twins by a fingerprint of it. A setting added later is absent
from both; read as its earlier-behaviour value, a checkpoint or finished sweep job written by
an earlier cnnx still resumes or is still skipped, as long as the setting keeps that value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: dotted key → the value that reproduces what runs did before the key existed.
SETTINGS_ADDED_LATER: dict[str, Any] = {
    "dataset.layout": "auto",  # npz datasets: the channels-last check came with it
}


#: dotted key → (its default before, the cnnx version that changed it). A run recorded before
#: the change and resumed without the key typed differs from its checkpoint in it, though the
#: user changed nothing: the refusal says how to continue it as it trained.
DEFAULTS_CHANGED: dict[str, tuple[Any, str]] = {
    "trainer.early_stopping.monitor": ("val_loss", "0.2.4"),  # now trainer.monitor's
}


def changed_default_hint(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """``"; the default of K changed in cnnx V: add K=OLD …"`` for each flat key that differs
    between a checkpoint's config and the current one as a changed default would make it."""
    changed = {key: (before, version) for key, (before, version) in DEFAULTS_CHANGED.items()
               if saved.get(key) == before and key in current and current[key] != before}
    if not changed:
        return ""
    versions = ", ".join(sorted({version for _, version in changed.values()}))
    settings = " ".join(f"{key}={before}" for key, (before, _) in changed.items())
    return f" (a default changed in cnnx {versions}: add {settings} to continue the run as it trained)"


def with_earlier_defaults(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The flat ``saved`` config, with each setting added later that ``current`` has and
    ``saved`` lacks read as its earlier-behaviour value."""
    added = {key: value for key, value in SETTINGS_ADDED_LATER.items() if key in current and key not in saved}
    return {**saved, **added}


def without_earlier_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """The nested ``config`` without the settings added later that hold their earlier-behaviour
    value: what an earlier cnnx would have recorded for the same training (a copy)."""
    for key, value in SETTINGS_ADDED_LATER.items():
        config = _pruned(config, key.split("."), value)
    return dict(config)


def _pruned(node: Any, keys: list[str], value: Any) -> Any:
    head, *rest = keys
    if not isinstance(node, Mapping) or head not in node:
        return node
    if rest:
        return {**node, head: _pruned(node[head], rest, value)}
    return {k: v for k, v in node.items() if k != head} if node[head] == value else node
