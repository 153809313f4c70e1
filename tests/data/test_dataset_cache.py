"""Prepared digits come back from the cache identical, without importing scikit-learn."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from cnnx.data import cache
from cnnx.data.digits import load_digits


def _same(a, b):
    for name in ("train", "val", "test"):
        for left, right in zip(getattr(a, name), getattr(b, name), strict=True):
            assert left.dtype == right.dtype and np.array_equal(left, right)
    assert (a.classes, a.input_shape, a.name, a.normalization) == (b.classes, b.input_shape, b.name, b.normalization)


def test_cached_digits_equal_freshly_prepared_ones(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    fresh = load_digits(size=12, normalize="unit", seed=3)
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    first = load_digits(size=12, normalize="unit", seed=3)
    assert len(list(tmp_path.glob("digits-*.npz"))) == 1
    second = load_digits(size=12, normalize="unit", seed=3)
    _same(fresh, first)
    _same(fresh, second)
    load_digits(size=12, normalize="unit", seed=4)  # other options: another file
    assert len(list(tmp_path.glob("digits-*.npz"))) == 2


def test_a_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    expected = load_digits(seed=1)
    (path,) = tmp_path.glob("digits-*.npz")
    path.write_bytes(path.read_bytes()[:1000])
    _same(load_digits(seed=1), expected)
    assert path.stat().st_size > 1000


@pytest.mark.parametrize("cached", [True, False])
def test_a_cache_hit_does_not_import_scikit_learn(tmp_path, cached):
    env = {**os.environ, cache.CACHE_ENV: str(tmp_path) if cached else "off"}
    code = "from cnnx.data.digits import load_digits; load_digits(size=16); import sys; print('sklearn' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    again = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    assert again.stdout.strip() == ("False" if cached else "True")


def test_an_unwritable_cache_folder_warns_and_still_loads(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker / "cache"))
    data = load_digits(seed=2)
    assert len(data.train[0]) > 0
    assert "cannot cache the prepared dataset" in capsys.readouterr().err


def test_an_atomic_write_where_chmod_is_refused_still_writes_the_file(tmp_path, monkeypatch):
    """A mount that refuses chmod (some FUSE and CIFS ones) failed every atomic write, and the
    temporary file's descriptor leaked."""
    import os

    from cnnx import cache_dir

    def refused(fd, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(cache_dir.os, "fchmod", refused)
    cache_dir.write_atomically(tmp_path / "table.csv", lambda stream: stream.write(b"a,b\n"))
    assert (tmp_path / "table.csv").read_bytes() == b"a,b\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    assert os.stat(tmp_path / "table.csv").st_size == 4
