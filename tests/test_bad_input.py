"""Every kind of bad input, through the real CLI: one line naming the key or file and what is
accepted, exit code 2, no traceback, no MLflow run left RUNNING, no half-written file.

The cases run two at a time from one test, each forked from one interpreter that has done the
imports (``run_cli_many``): as subprocesses of their own they took ~1.5 s each, mostly imports. The
base run reads a small pre-split .npz instead of the digits, so no case pays for sklearn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import all_runs, run_cli_many

pytestmark = pytest.mark.slow


def _images(rng, n):
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), np.arange(n) % 10


def write_inputs(folder: Path) -> dict[str, str]:
    """The files the cases point at, by placeholder name."""
    rng = np.random.default_rng(0)
    (xt, yt), (xv, yv), (xs, ys) = _images(rng, 200), _images(rng, 50), _images(rng, 50)
    nan, inf = xt.copy(), xt.copy()
    nan[3, 0, 2, 2], inf[7, 0, 1, 5] = np.nan, -np.inf
    files = {
        "good": dict(x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys),
        "labels12": dict(x_train=xt, y_train=np.arange(200) % 12, x_val=xv, y_val=np.arange(50) % 12, x_test=xs,
                         y_test=np.arange(50) % 12),
        "label_gaps": dict(x_train=xt, y_train=yt + (yt == 9) * 2, x_val=xv, y_val=yv, x_test=xs, y_test=ys),
        "nan": dict(x=nan, y=yt),
        "inf": dict(x=inf, y=yt),
        "empty": dict(x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64)),
        "one_class": dict(x=xt, y=np.zeros(200, np.int64)),
        "two_classes": dict(x=xt, y=yt % 2),
        "no_y": dict(x=xt),
        "mismatch": dict(x=xt, y=yt[:150]),
    }
    paths = {}
    for name, arrays in files.items():
        paths[name] = str(folder / f"{name}.npz")
        np.savez(paths[name], **arrays)
    paths["text"] = str(folder / "notes.npz")
    Path(paths["text"]).write_text("not an archive\n")
    paths["a_file"] = str(folder / "plain_file")
    Path(paths["a_file"]).write_text("x")
    paths["a_folder"] = str(folder / "a_folder")
    Path(paths["a_folder"]).mkdir()
    checkpoints = folder / "checkpoints"
    paths["ckpt_other_model"] = str(make_checkpoint(
        checkpoints / "other", [f"dataset.path={paths['good']}", "model.layers.conv1.out_channels=4"]))
    good = make_checkpoint(checkpoints / "good", [f"dataset.path={paths['good']}"])
    truncated = checkpoints / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    paths["ckpt_truncated"] = str(truncated)
    return paths


def make_checkpoint(directory: Path, overrides: list[str]) -> Path:
    """A real checkpoint of a freshly built run (in-process: cheaper than a CLI run)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from cnnx.app import build_run
    from cnnx.training.checkpoint import Checkpoint

    with initialize_config_module("cnnx.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=digits_small", "dataset=npz", *overrides])
    _, trainer = build_run(OmegaConf.to_container(cfg, resolve=True))
    return Checkpoint(directory).save(trainer)


BASE = ["+experiment=digits_small", "dataset=npz", "dataset.path={good}", "trainer.epochs=1"]

# (case id, overrides added to BASE, fragments the error line must contain, or not with a leading !)
CASES = [
    # unknown plugin names
    ("unknown layer", ["model.layers.conv1.type=conv3d"], ["conv3d", "model.layers.conv1", "conv2d"]),
    ("unknown optimizer", ["optimizer.type=sgdd"], ["sgdd", "optimizer", "adam"]),
    ("unknown loss", ["loss.type=hinge"], ["hinge", "loss", "cross_entropy"]),
    ("unknown dataset", ["dataset.type=cifar"], ["cifar", "dataset", "digits"]),
    ("unknown scheduler", ["scheduler.type=linear"], ["linear", "scheduler", "cosine"]),
    ("unknown config option", ["optimizer=nope"], ["optimizer/nope", "sgd"]),
    # wrong types, unknown keys
    ("wrong type epochs", ["trainer.epochs=abc"], ["trainer.epochs", "abc"]),
    ("wrong type kernel", ["model.layers.conv1.kernel_size=abc"], ["model.layers.conv1", "kernel_size", "abc"]),
    ("unknown key", ["trainer.epochss=3"], ["trainer.epochss", "epochs"]),
    # a real option the preset does not list: it was "unknown", as if conv2d had no stride
    ("layer option without +", ["model.layers.conv1.stride=2"],
     ["model.layers.conv1.stride is not in the config yet", "+model.layers.conv1.stride="]),
    # ... but a typo is still one: "prefix it with +" sent the user on a second run to learn that
    # a new layer, or an option of the type this command switches to, still gets the + advice
    ("new layer without +", ["model.layers.drop1.type=dropout"],
     ["model.layers.drop1 is not in the config yet", "+model.layers.drop1="]),
    ("option of the new type without +", ["optimizer.betas=[0.9,0.99]", "optimizer.type=adam"],
     ["optimizer.betas is not in the config yet", "+optimizer.betas="]),
    # a type no one can resolve yet: the check of the option must not turn into a traceback
    ("option of an interpolated type without +", ["model.layers.conv1.type=${{nope}}", "model.layers.conv1.kk=1"],
     ["model.layers.conv1.kk is not in the config yet"]),
    # a type chosen before the key is the one to judge it by: a typo stays a typo
    ("option typo after a group choice", ["optimizer=adam", "optimizer.eps2=1"],
     ["unknown option optimizer.eps2 for optimizer 'adam'; accepted: lr, betas, eps"]),
    ("layer option typo without +", ["model.layers.conv1.strid=2"],
     ["unknown option model.layers.conv1.strid for layer 'conv2d'", "accepted: out_channels, kernel_size, stride"]),
    # Typed by the user: no preset to blame.
    ("unknown option", ["+optimizer.lrr=0.1"], ["optimizer.lrr", "accepted: lr, momentum", "!preset"]),
    # The preset's conv options, which a dense layer does not take, and how to drop them.
    ("option from a preset", ["model.layers.conv1.type=dense"],
     ["model.layers.conv1.out_channels", "out_features", "set by a preset or another group? drop it with "
      "~model.layers.conv1.out_channels"]),
    ("key added where the schema has none", ["+trainer.epochz=3"], ["trainer.epochz", "epochs, batch_size"]),
    ("top-level key misspelt", ["+experiement=lenet"], ["experiement", "did you mean +experiment=lenet?"]),
    ("top-level key nothing uses", ["+sed=3"], ["+sed=3", "did you mean seed=3?"]),
    ("negative seed", ["seed=-1"], ["seed=-1", "0 <= seed < 2**32"]),
    ("schema key removed", ["~trainer.augment"], ["~trainer.augment", "cannot be removed"]),
    ("null key removed", ["~trainer.grad_clip_norm"], ["~trainer.grad_clip_norm", "nothing to remove"]),
    ("sweep with --cfg", ["-m", "--cfg", "job"], ["-m/--multirun", "--cfg", "drop -m"]),
    ("unknown --cfg choice", ["--cfg", "jobs"], ["--cfg", "'jobs'", "'job', 'hydra', 'all'"]),
    ("sweep of no value", ["-m", "optimizer.lr=range(0.1,0.1)"], ["optimizer.lr=range(0.1,0.1)", "no value"]),
    # Found by Hydra only after the parent run's line (a run it then deleted), in two lines.
    ("swept option that is not there", ["-m", "optimizer=adam,sgdd"],
     ["Could not find 'optimizer/sgdd'", "available: adam, adamw"]),
    ("joblib without workers", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
     ["hydra.launcher.n_jobs=0", "positive"]),
    ("launcher chosen with a dot", ["-m", "hydra.launcher=joblib"], ["hydra.launcher=joblib", "hydra/launcher=joblib"]),
    # The basic sweeper's params is null: OmegaConf asserted "Unexpected type: None", a traceback.
    ("search space entry of the basic sweeper", ["-m", "hydra.sweeper.params.optimizer.lr='0.1,0.2'"],
     ["hydra.sweeper.params.optimizer.lr", "optimizer.lr=A,B"]),
    ("key under a null value", ["-m", "+hydra.sweeper.params.foo=3"],
     ["hydra.sweeper.params.foo", "a key on its path is null or a list"]),
    # A list's keys are numbers: "invalid literal for int() with base 10: 'x'", a traceback.
    ("key under a list", ["hydra.searchpath.x=1"], ["hydra.searchpath.x", "a key on its path is null or a list"]),
    # OmegaConf's "Index 'x' (str) is not an int" and "list index out of range".
    ("key added under a list", ["+hydra.searchpath.x=1"], ["hydra.searchpath.x: hydra.searchpath is a list here"]),
    ("item past a list's end", ["hydra.searchpath.5=1"], ["hydra.searchpath[5]: hydra.searchpath is a list here"]),
    # Quoted and added with +: "invalid value for hydra.sweeper.params.optimizer: Cannot convert 'dict' to string".
    ("search space entry added with +", ["-m", "+hparams=lenet_optuna",
                                         "+hydra.sweeper.params.optimizer.lr='interval(0.01,0.1)'"],
     ["hydra.sweeper.params.optimizer", "(optimizer.lr is there)", "optimizer.lr='interval(LOW, HIGH)'"]),
    ("reversed optuna interval", ["-m", "+hparams=lenet_optuna", "optimizer.lr=tag(log,interval(0.3,0.003))"],
     ["optimizer.lr=tag(log,interval(0.3,0.003))", "LOW <= HIGH"]),
    ("optuna direction", ["-m", "+hparams=lenet_optuna", "hydra.sweeper.direction=up"],
     ["hydra.sweeper.direction=up", "maximize"]),
    ("sweep resumed without tracking", ["-m", "tracking=none", "sweep.resume=true"],
     ["sweep.resume=true", "tracking=mlflow"]),
    ("missing value", ["dataset.path=???"], ["dataset.path"]),
    ("bad policy", ["trainer.on_nonfinite=explode"], ["trainer.on_nonfinite", "explode", "skip_batch"]),
    ("unknown monitor", ["trainer.monitor=val_accc"], ["trainer.monitor", "val_accc", "val_acc"]),
    ("class weights of another length", ["+loss.weight=[1,2]"], ["loss.weight", "2 entries", "10 classes"]),
    ("class weights mistyped", ["+loss.weight=balancd"], ["loss.weight='balancd'", "balanced"]),
    ("unknown early-stopping monitor", ["trainer.early_stopping.enabled=true", "trainer.early_stopping.monitor=vall_loss"],
     ["trainer.early_stopping.monitor", "vall_loss", "val_loss"]),
    # zero or negative sizes, lr, epochs, batch size
    ("zero batch size", ["trainer.batch_size=0"], ["trainer.batch_size", "0", "positive"]),
    ("negative batch size", ["trainer.batch_size=-4"], ["trainer.batch_size", "-4"]),
    ("zero epochs", ["trainer.epochs=0"], ["trainer.epochs", "0"]),
    ("negative epochs", ["trainer.epochs=-2"], ["trainer.epochs must be a positive integer, got -2"]),
    ("zero lr", ["optimizer.lr=0"], ["optimizer", "lr", "lr > 0"]),
    ("negative lr", ["optimizer.lr=-1"], ["optimizer", "lr", "-1"]),
    ("zero channels", ["model.layers.conv1.out_channels=0"], ["model.layers.conv1", "out_channels", "0"]),
    ("sweep resume on a single run", ["sweep.resume=true"], ["sweep.resume=true", "trainer.resume=true"]),
    ("shift beyond the image", ["trainer.augment.max_shift=8"], ["trainer.augment.max_shift=8", "max_shift < 8"]),
    ("early stopping setting while it is off", ["trainer.early_stopping.mode=maximum"],
     ["trainer.early_stopping.mode", "maximum"]),
    ("negative flush timeout", ["tracking.flush_timeout=-1"], ["tracking.flush_timeout=-1.0", "seconds >= 0"]),
    ("model too large for memory", ["model.layers.fc1.out_features=100000000000"],
     ["out of memory", "Unable to allocate", "the layers' widths"]),
    ("zero features", ["model.layers.fc1.out_features=0"], ["model.layers.fc1", "out_features", "0"]),
    ("negative clip", ["trainer.grad_clip_norm=-1"], ["trainer.grad_clip_norm", "-1", "> 0"]),
    # The scheduler's own error could only say "epochs=2", a key the user cannot find.
    ("warm-up longer than the run", ["scheduler=cosine", "scheduler.warmup_epochs=50", "trainer.epochs=2"],
     ["scheduler.warmup_epochs=50", "trainer.epochs=2"]),
    # shapes
    ("kernel larger than input", ["model.layers.conv1.kernel_size=20"], ["model.layers.conv1", "larger than the input"]),
    ("pool larger than input", ["model.layers.pool1.kernel_size=16"], ["model.layers.pool1", "larger than the input"]),
    ("shape of zero", ["model.layers.conv1.kernel_size=8", "model.layers.conv1.padding=0"],
     ["model.layers.pool1", "(8, 1, 1)"]),
    ("dense before flatten", ["~model.layers.flatten"], ["model.layers.fc1", "flatten"]),
    ("output size", ["model.layers.fc2.out_features=3"], ["model.layers.fc2", "10 classes"]),
    # data
    ("one output for cross_entropy", ["dataset.path={two_classes}", "model.layers.fc2.out_features=1"],
     ["cross_entropy", "model.layers.fc2", "loss=bce"]),
    ("labels out of range", ["dataset.path={labels12}"], ["model.layers.fc2", "12 classes"]),
    # 1-based labels, or a subset: "set out_features" to 12 would train outputs for no class.
    ("labels with gaps", ["dataset.path={label_gaps}"],
     ["label_gaps.npz", "labels are 0..9, 11", "class 10 without a sample", "0..K-1", "np.unique", "!out_features"]),
    ("nan in data", ["dataset.path={nan}"], ["nan.npz", "NaN"]),
    ("inf in data", ["dataset.path={inf}"], ["inf.npz", "infinite"]),
    ("empty dataset", ["dataset.path={empty}"], ["empty.npz", "empty"]),
    ("single class", ["dataset.path={one_class}"], ["one_class.npz", "single class"]),
    ("npz without y", ["dataset.path={no_y}"], ["no_y.npz", "'y'"]),
    ("npz length mismatch", ["dataset.path={mismatch}"], ["mismatch.npz", "200", "150"]),
    ("npz not an archive", ["dataset.path={text}"], ["notes.npz", "not a readable .npz"]),
    ("npz not found", ["dataset.path=/nonexistent/data.npz"], ["/nonexistent/data.npz", "not found"]),
    # checkpoints and output directories
    ("truncated checkpoint", ["trainer.resume={ckpt_truncated}"], ["truncated.npz", "truncated"]),
    ("foreign checkpoint", ["trainer.resume={good}"], ["good.npz", "not a cnnx checkpoint"]),
    ("other architecture", ["trainer.resume={ckpt_other_model}"], ["epoch-0000.npz", "conv1.weight", "shape"]),
    ("nothing to resume", ["trainer.resume=true"], ["trainer.resume=true", "no checkpoint"]),
    ("output dir not writable", ["hydra.run.dir={a_file}/run"], ["plain_file", "hydra.run.dir"]),
    ("output dir on a pseudo-filesystem", ["hydra.run.dir=/proc/cnnx-run"], ["/proc/cnnx-run", "hydra.run.dir"]),
    ("tracking store unreachable", ["tracking.uri=http://127.0.0.1:9"], ["tracking.uri", "http://127.0.0.1:9"]),
    ("tracking store a plain path", ["tracking.uri=runs.db"], ["tracking.uri='runs.db'", "sqlite:///runs.db"]),
    ("tracking store scheme unknown", ["tracking.uri=foo://bar"], ["tracking.uri='foo://bar'", "scheme", "sqlite:"]),
    ("tracking store not a database", ["tracking.uri=sqlite:///{text}"], ["tracking.uri", "not an SQLite database"]),
    ("tracking store on a pseudo-filesystem", ["tracking.uri=sqlite:////proc/cnnx.db"],
     ["tracking.uri", "cannot create files in '/proc'"]),
    # SQLAlchemy opens sqlite:/// as a database in memory: the run would be logged nowhere.
    ("tracking store names no file", ["tracking.uri=sqlite:///"],
     ["tracking.uri='sqlite:///'", "names no database file", "sqlite:///PATH.db"]),
    ("tracking store names no file, in process", ["tracking.uri=sqlite:///", "tracking.background=false"],
     ["tracking.uri='sqlite:///'", "names no database file"]),
    ("tracking store a folder", ["tracking.uri=sqlite:///{a_folder}"],
     ["tracking.uri='sqlite:///", "is a folder", "a_folder/mlflow.db)"]),
    ("tracking store a folder, in process", ["tracking.uri=sqlite:///{a_folder}", "tracking.background=false"],
     ["tracking.uri='sqlite:///", "is a folder", "a_folder/mlflow.db)"]),
    ("experiment name empty", ["experiment_name=''"], ["experiment_name=''", "empty"]),
    # It fell back to experiment_name's, silently.
    ("tracking's experiment name empty", ["tracking.experiment_name="],
     ["tracking.experiment_name='' is empty", "or null"]),
    ("experiment name empty, in process", ["experiment_name=''", "tracking.background=false"],
     ["experiment_name=''", "empty"]),
    ("checkpoint dir not writable", ["trainer.checkpoint.dir={a_file}/ck"], ["trainer.checkpoint.dir", "plain_file"]),
]


def case_run(root: Path, paths: dict[str, str], number: int, overrides: list[str]) -> tuple[list[str], Path]:
    workdir = root / f"case{number:02d}"
    workdir.mkdir()
    return [arg.format(**paths) for arg in [*BASE, *overrides]], workdir


def test_every_bad_input_fails_in_one_line_naming_the_key(tmp_path):
    assert len(CASES) >= 25
    paths = write_inputs(tmp_path)
    runs = [case_run(tmp_path, paths, i, overrides) for i, (_, overrides, _) in enumerate(CASES)]
    results = run_cli_many(runs)
    problems = []
    logged = 0
    for (name, _, fragments), (_, workdir), result in zip(CASES, runs, results, strict=True):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        if result.returncode != 2 or len(lines) != 1 or not last.startswith("cnnx: error: "):
            problems.append(f"{name}: exit {result.returncode}, stderr ends {result.stderr[-600:]!r}")
            continue
        missing = [f for f in fragments if not f.startswith("!") and f not in last]
        if missing:
            problems.append(f"{name}: {missing} not in {last!r}")
        unwanted = [f[1:] for f in fragments if f.startswith("!") and f[1:] in last]
        if unwanted:
            problems.append(f"{name}: {unwanted} in {last!r}")
        # A run that got as far as its run directory keeps the error there too.
        for log in workdir.rglob("app.log"):
            logged += 1
            if not log.read_text().rstrip().endswith(last):
                problems.append(f"{name}: {log} does not end with the error line")
        if [r for r in all_runs(workdir) if r.info.status == "RUNNING"]:
            problems.append(f"{name}: an MLflow run was left RUNNING")
        leftovers = [p for p in workdir.rglob("*") if p.is_file() and (p.suffix == ".tmp" or p.name.startswith("epoch-"))]
        if leftovers:
            problems.append(f"{name}: left files {leftovers}")
    assert not problems, "\n".join(problems)
    assert logged >= 20, f"only {logged} cases wrote an app.log"
