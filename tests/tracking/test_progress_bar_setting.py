"""MLflow's artifact progress bar, turned off for one download a resumed run makes."""

import os

import pytest

from cnnx.tracking.mlflow_tracker import no_artifacts_progress_bar

NAME = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def test_off_for_the_block_only_even_when_it_raises(monkeypatch):
    """Before: set with os.environ.setdefault and never unset, so later jobs of a sweep and a
    notebook user of the process lost MLflow's bars for good."""
    monkeypatch.delenv(NAME, raising=False)
    with pytest.raises(KeyError), no_artifacts_progress_bar():
        assert os.environ[NAME] == "false"
        raise KeyError("the download failed")
    assert NAME not in os.environ


@pytest.mark.parametrize("setting", ["true", "false"])
def test_a_users_own_setting_stands(monkeypatch, setting):
    monkeypatch.setenv(NAME, setting)
    with no_artifacts_progress_bar():
        assert os.environ[NAME] == setting
    assert os.environ[NAME] == setting
