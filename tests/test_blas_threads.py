import pytest

from cnnx.blas_threads import run_blas_threads
from cnnx.errors import ConfigError


@pytest.mark.parametrize(("configured", "share", "expected"), [
    (1, None, 1),        # the default: single-threaded single runs
    (None, None, None),  # the library's own default
    (None, 2, 2),        # a sweep job's share when nothing is configured
    (4, 1, 1),           # a sweep job never exceeds its share
    (1, 4, 1),
])
def test_run_threads_are_configured_and_capped_by_the_sweep_share(configured, share, expected):
    assert run_blas_threads(configured, share) == expected


@pytest.mark.parametrize("bad", [0, -2, True, 1.5, "2"])
def test_bad_thread_counts_name_the_key(bad):
    with pytest.raises(ConfigError, match=r"trainer.blas_threads=.*accepted: a positive integer"):
        run_blas_threads(bad, None)
