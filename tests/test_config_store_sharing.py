"""Hydra's per-compose copy of its config repository shares the live ConfigStore
(``cnnx.config_store_sharing``), and composing still sees everything the store holds."""

import copy

import pytest
from hydra import compose, initialize_config_module
from hydra._internal.config_repository import CachingConfigRepository
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra

import cnnx.app  # noqa: F401 — installs the sharing, as the CLI does


@pytest.fixture
def repository():
    with initialize_config_module("cnnx.conf", version_base="1.3"):
        yield GlobalHydra.instance().config_loader().repository


def test_a_copied_repository_shares_the_store_and_copies_the_rest(repository):
    copied = copy.deepcopy(repository)
    assert copied.get_sources() is not repository.get_sources()
    stores = [source.store for source in copied.get_sources() if hasattr(source, "store")]
    assert stores and all(store is ConfigStore.instance() for store in stores)
    for original, clone in zip(repository.get_sources(), copied.get_sources()):
        assert clone is not original and (clone.provider, clone.path) == (original.provider, original.path)


def test_configs_stored_after_the_copy_load_through_it(repository):
    caching = CachingConfigRepository(repository)
    store = ConfigStore.instance()
    store.store(group="cnnx_probe", name="late", node={"value": 3})
    try:
        loaded = caching.load_config("cnnx_probe/late")
        assert loaded is not None and loaded.config.value == 3
        # What a compose loads is a copy: changing it leaves the stored node as it was.
        loaded.config.value = 4
        assert CachingConfigRepository(repository).load_config("cnnx_probe/late").config.value == 3
    finally:
        del store.repo["cnnx_probe"]


def test_composition_is_unchanged():
    with initialize_config_module("cnnx.conf", version_base="1.3"):
        first = compose("config", overrides=["+experiment=digits_small", "optimizer.lr=0.3"])
        second = compose("config", overrides=["+experiment=lenet"])
    assert first.optimizer.lr == 0.3 and first.model.layers.conv1.out_channels != second.model.layers.conv1.out_channels
    assert second.optimizer.lr != 0.3, "a compose must not see another compose's overrides"
