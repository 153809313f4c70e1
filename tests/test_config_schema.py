"""Top-level keys added with ``+``: variables for interpolation pass, anything else is a typo."""

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import cnnx.app  # noqa: F401 — registers the schema, as the CLI does
from cnnx.config_schema import added_top_level_keys, close_key, unused_top_level_keys


def composed(*overrides):
    with initialize_config_module("cnnx.conf", version_base="1.3"):
        return compose("config", overrides=["+experiment=digits_small", *overrides])


@pytest.mark.parametrize(("overrides", "unused"), [
    ([], []),
    (["+experiement=lenet"], ["experiement"]),
    (["+base_lr=0.2", "optimizer.lr=${base_lr}"], []),
    (["+base_lr=0.2", "optimizer.lr=${oc.select:base_lr,0.1}"], []),
    (["+lr=0.2", "optimizer.lr=0.3"], ["lr"]),  # ${optimizer.lr} elsewhere is not ${lr}
    (["+width=8", "+name=a", "model.layers.conv1.out_channels=${width}"], ["name"]),
])
def test_only_keys_that_nothing_refers_to_are_unused(overrides, unused):
    assert unused_top_level_keys(composed(*overrides)) == unused


def test_a_reference_from_hydras_own_config_counts():
    cfg = composed("+run_tag=abc")
    assert unused_top_level_keys(cfg) == ["run_tag"]
    assert unused_top_level_keys(cfg, OmegaConf.create({"run": {"dir": "outputs/${run_tag}"}})) == []


@pytest.mark.parametrize(("key", "guess"), [("experiement", "experiment"), ("sed", "seed"),
                                            ("hparam", "hparams"), ("traner", "trainer"), ("zzzz", None)])
def test_the_closest_key_or_group_is_suggested(key, guess):
    assert close_key(key) == guess


def test_only_keys_the_command_line_adds_are_checked():
    # A preset file may keep notes at its top level; the check is for typed overrides.
    overrides = ["+experiement=lenet", "seed=3", "+trainer.epoch=1", "++note=a", "+hydra/launcher=joblib", "~x"]
    assert added_top_level_keys(overrides) == {"experiement", "note"}


@pytest.mark.parametrize(("overrides", "watched"), [
    ([], "val_acc"),
    (["trainer.monitor=val_loss"], "val_loss"),
    (["trainer.monitor=val_loss", "trainer.early_stopping.monitor=train_loss"], "train_loss"),
])
def test_early_stopping_watches_the_runs_monitor_unless_told_otherwise(overrides, watched):
    """It watched val_loss while the run was ranked by val_acc: the weights restore_best handed
    back were not those of the epoch the run reported as its best."""
    cfg = composed(*overrides)
    assert cfg.trainer.early_stopping.monitor == watched
