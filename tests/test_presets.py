"""Every preset stays usable when a user swaps one of its config groups.

A preset that sets an option only one optimizer accepts (SGD's ``momentum``) breaks
``+experiment=lenet optimizer=adam``, the README's own example: so each preset is built with
every optimizer, scheduler and tracking choice shipped in cnnx.conf.
"""

from importlib.resources import files

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cnnx.app import build_run

CONF = files("cnnx.conf")
PRESETS = sorted(p.name.removesuffix(".yaml") for p in CONF.joinpath("experiment").iterdir() if p.name.endswith(".yaml"))
SWAPS = [f"{group}={p.name.removesuffix('.yaml')}" for group in ("optimizer", "scheduler")
         for p in CONF.joinpath(group).iterdir() if p.name.endswith(".yaml")]


def test_the_presets_and_groups_are_found():
    assert {"lenet", "digits_small"} <= set(PRESETS)
    assert {"optimizer=adam", "optimizer=sgd", "scheduler=cosine"} <= set(SWAPS)


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_builds_with_every_optimizer_and_scheduler(preset):
    with initialize_config_module("cnnx.conf", version_base="1.3"):
        for swap in SWAPS:
            cfg = compose("config", overrides=[f"+experiment={preset}", swap, "tracking=none"])
            # build_run checks every option name against the component's signature.
            build_run(OmegaConf.to_container(cfg, resolve=True))
