"""Checks for the constructor options that layers and losses share (flags, counts), so every
component rejects a bad value with the same one-line message naming itself and the key."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from cnnx.errors import ConfigError


def check_flag(owner: str, key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{owner}: {key} must be true or false, got {value!r}")
    return bool(value)


def check_positive_int(owner: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{owner}: {key} must be a positive integer, got {value!r}")
    return int(value)
