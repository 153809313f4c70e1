"""New sqlite MLflow stores: built aside, linked into place, their schema cached for the next one."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from cnnx.cache_dir import CACHE_ENV
from cnnx.tracking.sqlite_store import create_store_atomically


def schema_templates(cache):
    return sorted(cache.glob("mlflow-*-schema.db"))


def assert_usable(path):
    client = MlflowClient(f"sqlite:///{path}")
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "acc", 0.5)
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"acc": 0.5}
    # MLflow adds the default experiment when it first opens a store: it points beside this one
    assert client.get_experiment("0").name == "Default"


def test_the_first_new_store_caches_its_schema_and_the_next_starts_from_it(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    create_store_atomically(f"sqlite:///{tmp_path / 'first.db'}")
    (template,) = schema_templates(cache)
    create_store_atomically(f"sqlite:///{tmp_path / 'second.db'}")
    assert (tmp_path / "second.db").read_bytes() == template.read_bytes()
    for name in ("first.db", "second.db"):
        assert_usable(tmp_path / name)
    assert not list(tmp_path.glob(".*")), "scratch files left behind"


@pytest.mark.parametrize("damage", [b"", b"not a database", "truncated"])
def test_a_damaged_schema_template_is_rebuilt(tmp_path, monkeypatch, damage):
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    create_store_atomically(f"sqlite:///{tmp_path / 'first.db'}")
    (template,) = schema_templates(cache)
    good = template.read_bytes()
    damaged = good[: len(good) // 3] if damage == "truncated" else damage
    template.write_bytes(damaged)
    create_store_atomically(f"sqlite:///{tmp_path / 'second.db'}")
    assert_usable(tmp_path / "second.db")
    # rebuilt: the next store is a copy of the new template
    assert template.read_bytes() != damaged
    create_store_atomically(f"sqlite:///{tmp_path / 'third.db'}")
    assert (tmp_path / "third.db").read_bytes() == template.read_bytes()


def test_with_the_cache_off_stores_are_built_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "off")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    create_store_atomically(f"sqlite:///{tmp_path / 'store.db'}")
    assert_usable(tmp_path / "store.db")
    assert not (tmp_path / "home").exists()
