"""``augmented``: any registered dataset with extra, randomly shifted or flipped copies of
its training images (val and test stay untouched, so metrics stay comparable).

Augmentation as a dataset wrapper works offline: the copies are drawn once, from ``seed``,
so the run stays reproducible and the trainer needs no hook. Configure the wrapped dataset
under ``base`` exactly as it would be configured on its own::

    python -m cnnx dataset=augmented dataset.base.type=digits dataset.copies=2 dataset.hflip=true
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from numbers import Integral
from typing import Any

import numpy as np

from cnnx import registry
from cnnx.data.splits import DataSplits
from cnnx.errors import ConfigError
from cnnx.training.augment import random_shift


def load_augmented(
    base: Mapping[str, Any],
    copies: int = 1,
    max_shift: int = 2,
    hflip: bool = False,
    vflip: bool = False,
    seed: int = 0,
) -> DataSplits:
    owner = "dataset augmented"
    if not isinstance(base, Mapping) or "type" not in base:
        raise ConfigError(
            f"{owner}: dataset.base must be a dataset config with a 'type' "
            f"(e.g. {{type: digits}}), got {base!r}; available: {', '.join(registry.datasets.names())}"
        )
    for key, value, low in (("copies", copies, 1), ("max_shift", max_shift, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ConfigError(f"{owner}: {key}={value!r} is invalid; accepted: an integer >= {low}")
    for key, value in (("hflip", hflip), ("vflip", vflip)):
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{owner}: {key}={value!r} is invalid; accepted: true, false")
    if not (max_shift or hflip or vflip):
        raise ConfigError(
            f"{owner}: max_shift=0, hflip=false and vflip=false would only duplicate images; "
            f"set at least one"
        )
    options = {k: v for k, v in base.items() if k != "type"}
    data = registry.datasets.create(base["type"], options, "dataset.base")

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA06]))
    x, y = data.train
    extra = []
    for _ in range(int(copies)):
        # random_shift returns its input unchanged when there is nothing to shift.
        copy = random_shift(x, int(max_shift), rng) if max_shift else x.copy()
        for enabled, axis in ((hflip, 3), (vflip, 2)):
            if enabled:
                flip = rng.random(len(copy)) < 0.5
                copy[flip] = np.flip(copy[flip], axis=axis)
        extra.append(copy)
    train = (np.concatenate([x, *extra]), np.concatenate([y] * (int(copies) + 1)))
    return replace(data, train=train, name=f"augmented:{data.name}")
