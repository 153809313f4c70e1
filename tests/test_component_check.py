"""What a sweep checks of its jobs' components before it starts: only what no swept key varies."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cnnx.component_check import check_components
from cnnx.errors import ConfigError, PluginError


def shared(**changes):
    """A sweep's config as Hydra composes it before its jobs: the swept values left out."""
    config = {"dataset": {"type": "digits"}, "loss": {"type": "cross_entropy"},
              "optimizer": {"type": "sgd", "lr": 0.1}, "scheduler": {"type": "constant"},
              "model": {"layers": {"conv1": {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
                                   "relu1": {"type": "relu"}, "drop": None,
                                   "block1": {"type": "residual", "layers": {"c": {"type": "conv2d", "out_channels": 4,
                                                                                   "kernel_size": 3}}}}}}
    cfg = OmegaConf.create(config)
    for key, value in changes.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


def test_a_shared_component_no_job_could_build_is_named_as_a_run_names_it():
    check_components(shared(), ["optimizer.lr"])
    with pytest.raises(PluginError, match=r"^unknown layer type 'tanhh' at model.layers.relu1 "):
        check_components(shared(model__layers__relu1__type="tanhh"), ["optimizer.lr"])
    with pytest.raises(ConfigError, match=r"^unknown option model.layers.block1.layers.c.foo for layer 'conv2d'"):
        check_components(shared(model__layers__block1__layers__c__foo=1), ["model.layers.block1.layers.c.out_channels"])
    with pytest.raises(ConfigError, match=r"^unknown option optimizer.foo for optimizer 'sgd'"):
        check_components(shared(optimizer__foo=1), ["optimizer.lr", "model.layers.relu1.type"])


@pytest.mark.parametrize("swept", [
    ["model.layers.relu1.type"],  # relu1's type varies: each job checks its own
    ["model"], ["model.layers"],  # a group or section: any layer may differ
    ["+experiment"], ["hparams"],  # a preset: any key may differ
])
def test_what_a_swept_key_varies_is_left_to_each_job(swept):
    check_components(shared(model__layers__relu1__type="tanhh"), swept)


def test_an_option_the_sweep_adds_is_left_to_each_job():
    # +optimizer.foo=1,2: the sweep's config lacks it, and every job has it; +model.layers.conv1.foo too.
    check_components(shared(optimizer__type="sgdd"), ["optimizer.foo"])
    check_components(shared(model__layers__conv1__type="conv3d"), ["model.layers.conv1.foo"])
    with pytest.raises(PluginError, match="'conv3d' at model.layers.conv1 "):  # other layers are still checked
        check_components(shared(model__layers__conv1__type="conv3d"), ["model.layers.relu1.foo"])


def test_a_layer_or_block_given_by_an_interpolation_that_only_jobs_resolve_is_left_to_them():
    # The swept key the interpolation reads is absent from the sweep's config.
    check_components(shared(model__layers__relu1="${model.choice}"), ["model.choice"])
    check_components(shared(model__layers__block1__layers="${model.body}"), ["model.body"])
