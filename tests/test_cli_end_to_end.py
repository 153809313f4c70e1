"""The real `python -m cnnx` command, real Hydra composition, a real sqlite MLflow store.

Each test runs in its own tmp dir, outside the repository, so it also proves the configs and
presets ship with the installed package.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from e2e_helpers import all_runs, list_artifacts, metric_history, run_cli, store_client

EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds")
PRESETS = ["lenet", "digits_small", "vgg_small", "resnet_small", "binary_synthetic"]

pytestmark = pytest.mark.slow


def assert_finished_run(tmp_path, experiment: str, epochs: int):
    client = store_client(tmp_path)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    for key in EPOCH_METRICS:
        steps = [step for step, _ in metric_history(client, run.info.run_id, key)]
        assert steps == list(range(1, epochs + 1)), f"{key} logged at steps {steps}"
    assert 0.0 <= run.data.metrics["test_acc"] <= 1.0 and "test_loss" in run.data.metrics
    # Test figures belong to the model as it ended, so they sit at the last epoch's step.
    for key in ("test_acc", "test_loss"):
        assert [step for step, _ in metric_history(client, run.info.run_id, key)] == [epochs], key
    params = run.data.params
    assert params["experiment_name"] == experiment and "optimizer.lr" in params and "trainer.epochs" in params
    # the trainable parameter count, as model_summary.txt totals it: a sweep over widths plots against it
    summary = open(client.download_artifacts(run.info.run_id, "model_summary.txt", str(tmp_path / "summary"))).read()
    assert f"{int(params['model.num_parameters']):,}" in summary, summary
    assert any(k.startswith("model.layers.") for k in params)
    assert run.data.tags["cnnx.version"]
    # Who and what ran it; run outside a git work tree, no commit is claimed.
    assert run.data.tags["mlflow.source.name"] == "cnnx" and run.data.tags["mlflow.user"]
    assert not [k for k in run.data.tags if ".git." in k]
    assert run.data.tags["cnnx.blas_threads"] == "1"  # trainer.blas_threads default
    artifacts = list_artifacts(client, run.info.run_id)
    assert "config.yaml" in artifacts and "weights.npz" in artifacts and "model_summary.txt" in artifacts
    kernel_images = Counter(a.split("+step+")[0] for a in artifacts
                            if a.startswith("images/kernels") and a.endswith(".png"))
    # the first conv layer's kernels for the initial weights (step 0) and at every epoch
    assert max(kernel_images.values()) == epochs + 1, artifacts
    return client, run


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_and_logs_a_finished_run(tmp_path, preset):
    result = run_cli([f"+experiment={preset}", "trainer.epochs=2"], tmp_path)
    assert result.returncode == 0, result.stderr
    client, run = assert_finished_run(tmp_path, preset, epochs=2)
    # Its id, for `cnnx predict --run` and `mlflow models serve`, without opening the UI.
    assert result.stderr.splitlines()[-1] == (f"cnnx: run {run.info.run_id} in experiment {preset!r} at "
                                              f"sqlite:///{tmp_path / 'mlflow.db'}; model: runs:/{run.info.run_id}/model")
    weights = np.load(client.download_artifacts(run.info.run_id, "weights.npz", str(tmp_path)))
    assert all(weights[k].dtype == np.float32 for k in weights.files)
    config_text = (tmp_path / "config.yaml").read_text() if (tmp_path / "config.yaml").exists() else \
        open(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read()
    assert f"experiment_name: {preset}" in config_text


def test_lenet_preset_reaches_098_test_accuracy(tmp_path):
    result = run_cli(["+experiment=lenet"], tmp_path)
    assert result.returncode == 0, result.stderr
    _, run = assert_finished_run(tmp_path, "lenet", epochs=20)
    assert run.data.metrics["test_acc"] >= 0.98, run.data.metrics


def test_same_config_and_seed_log_identical_metrics(tmp_path):
    histories = []
    for attempt in ("a", "b"):
        workdir = tmp_path / attempt
        workdir.mkdir()
        result = run_cli(["+experiment=digits_small", "trainer.epochs=3", "seed=7", "tracking.log_plots=false",
                          "tracking.log_model=false"], workdir)
        assert result.returncode == 0, result.stderr
        client = store_client(workdir)
        (run,) = all_runs(workdir)
        keys = [k for k in EPOCH_METRICS if k != "epoch_seconds"] + ["test_loss", "test_acc"]
        histories.append({k: metric_history(client, run.info.run_id, k) for k in keys})
    assert histories[0] == histories[1]


def test_tracking_disabled_trains_without_a_store(tmp_path):
    result = run_cli(["+experiment=digits_small", "trainer.epochs=1", "tracking=none"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "mlflow.db").exists()
    # The run's lines go to stdout (so `> train.log` keeps them) and to the run directory's log.
    # The console gets plain lines; the log file the same lines, timestamped.
    lines = result.stdout.splitlines()
    assert "Total params" in result.stdout and "Total params" not in result.stderr
    assert any(line.startswith("epoch   1/1 ") for line in lines) and lines[-1].startswith("val_acc (best epoch) = ")
    (log,) = (tmp_path / "outputs").glob("*/*/app.log")
    assert f"[cnnx.run][INFO] - {lines[-1]}" in log.read_text()
    assert "warning" not in result.stderr  # its logits are not taken for probabilities


def test_a_run_ends_with_its_test_figures_then_where_it_was_logged_and_where_its_files_are(tmp_path):
    """The test line came only after the MLflow report (seconds of plots and the model), below
    the line naming the run; that line never reached app.log, and no line named the run's
    directory, which trainer.resume and cnnx predict --weights need."""
    result = run_cli(["+experiment=digits_small", "trainer.epochs=2", "hydra.run.dir=runs/first"], tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = all_runs(tmp_path)
    assert result.stdout.splitlines()[-2:-1] == ["run directory: runs/first"]
    logged = [line.split("] - ", 1)[1] for line in (tmp_path / "runs/first/app.log").read_text().splitlines()
              if "] - " in line]
    ending = [line for line in logged if line.startswith(("epoch   2/2", "test ", "cnnx: run ", "run directory"))]
    assert [line.split()[0] for line in ending] == ["epoch", "test", "cnnx:", "run"]
    assert ending[2].startswith(f"cnnx: run {run.info.run_id} in experiment 'digits_small'")


def test_balanced_class_weights_are_computed_shown_and_logged(tmp_path):
    result = run_cli(["+experiment=digits_small", "trainer.epochs=1", "+loss.weight=balanced"], tmp_path)
    assert result.returncode == 0, result.stderr
    (shown,) = [line for line in result.stdout.splitlines() if line.startswith("loss weights (balanced): ")]
    assert shown.count(",") == 9  # one per digit
    (run,) = all_runs(tmp_path)
    assert run.data.params["loss.weight"] == "balanced"


@pytest.mark.parametrize("background", ["true", "false"])
def test_an_empty_store_file_gets_its_schema_without_mlflows_lines(tmp_path, background):
    """A run killed as it started can leave mlflow.db empty; the next run printed MLflow's
    "Creating initial MLflow database tables..." and "Updating database tables" lines."""
    (tmp_path / "mlflow.db").touch()
    result = run_cli(["+experiment=digits_small", "trainer.epochs=1", f"tracking.background={background}",
                      "tracking.log_plots=false"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line.split(" in experiment")[0][:10] for line in result.stderr.splitlines()] == ["cnnx: run "]
    (run,) = all_runs(tmp_path)
    assert run.info.status == "FINISHED"


def test_a_softmax_before_cross_entropy_is_warned_about_in_one_line(tmp_path):
    result = run_cli(["+experiment=digits_small", "trainer.epochs=1", "tracking=none",
                      "+model.layers.probabilities.type=softmax"], tmp_path)
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning.startswith("cnnx: warning: cross_entropy: the model's outputs look like probabilities ")


def test_without_a_validation_split_the_closing_line_names_the_training_figure(tmp_path):
    result = run_cli(["+experiment=digits_small", "trainer.epochs=2", "tracking=none", "dataset.val_fraction=0"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    assert last.startswith("train_acc (best epoch) = ") and last.endswith(" (no validation split for val_acc)"), last


def test_tracking_uri_override_and_environment_variable(tmp_path):
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    uri = f"sqlite:///{elsewhere / 'runs.db'}"
    # Where runs go is all this checks: the end-of-run report would add seconds to each.
    lean = ["+experiment=digits_small", "trainer.epochs=1", "tracking.log_plots=false", "tracking.log_model=false"]
    result = run_cli([*lean, f"tracking.uri={uri}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "runs.db").exists() and not (tmp_path / "mlflow.db").exists()
    result = run_cli(lean, tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{elsewhere / 'env.db'}"})
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "env.db").exists() and not (tmp_path / "mlflow.db").exists()


# Bad input (config, data, checkpoints, output dirs) is covered by tests/test_bad_input.py.


def test_plugins_command_lists_components(tmp_path):
    result = run_cli(["plugins"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cnnx.layers" in result.stdout and "conv2d" in result.stdout and "cnnx.datasets" in result.stdout


@pytest.mark.parametrize("typed, hint", [("compre", "; did you mean cnnx compare?"), ("lenet", "")])
def test_a_mistyped_command_is_named_with_the_commands(tmp_path, typed, hint):
    result = run_cli([typed, "trainer.epochs=1"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"cnnx: error: '{typed}' is neither a command (plugins, predict, compare) "
                                     f"nor an override KEY=VALUE{hint}")


def test_help_into_a_closed_pipe_exits_quietly(tmp_path):
    import subprocess
    import sys

    # `python -m cnnx --help | head -1`: the reader may be gone before the text is written.
    process = subprocess.Popen([sys.executable, "-m", "cnnx", "--help"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141, stderr  # 128 + SIGPIPE, as the shell reports it
    assert "Traceback" not in stderr


def test_help_names_the_subcommands_and_the_config_groups(tmp_path):
    result = run_cli(["--help"], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cnnx: train, sweep and compare")
    for shown in ("python -m cnnx compare", "python -m cnnx predict", "python -m cnnx plugins",
                  "experiment: binary_synthetic, digits_small, lenet", "optimizer: adam"):
        assert shown in result.stdout, shown


def test_hydra_verbose_prints_hydras_debug_lines(tmp_path):
    """The README's hydra.verbose=true: cnnx's Hydra logging held Hydra's loggers at INFO."""
    result = run_cli(["+experiment=digits_small", "trainer.epochs=1", "tracking=none", "hydra.verbose=true"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[HYDRA] Installed Hydra Plugins" in result.stdout
    assert "alembic" not in result.stdout + result.stderr


def test_the_run_directory_line_names_a_directory_that_is_the_working_one(tmp_path):
    """With hydra.job.chdir=true the run's directory is the working directory: it said "."."""
    result = run_cli(["+experiment=digits_small", "trainer.epochs=1", "tracking=none", "hydra.job.chdir=true",
                      "hydra.run.dir=run"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"run directory: {(tmp_path / 'run').resolve()}" in result.stdout.splitlines()
