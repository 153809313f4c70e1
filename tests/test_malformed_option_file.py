"""An option file that is not valid YAML — a plugin's (pkg://) or the user's own (file://) — stops
a run, and a sweep before its parent run exists, in one line naming the option, the file and the
YAML problem with its line, exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2e_helpers import run_cli_many

from cnnx.option_file_yaml import yaml_problem

pytestmark = pytest.mark.slow

#: conf/model/x.yaml of the reviewer's plugin (cnnx-rvbad): its flow mapping is never closed.
UNCLOSED = "name: broken\nlayers:\n  conv1: {type: conv2d, out_channels: 8\n"


def write_configs(root: Path) -> dict[str, str]:
    """A config package (pkg://cnnx_yaml_case.conf) and a plain folder, each with model/x.yaml."""
    package = root / "site" / "cnnx_yaml_case"
    for folder in (package / "conf" / "model", root / "own" / "model"):
        folder.mkdir(parents=True)
        (folder / "x.yaml").write_text(UNCLOSED)
    (package / "__init__.py").write_text("")
    (package / "conf" / "__init__.py").write_text("")
    return {"pkg": "pkg://cnnx_yaml_case.conf", "file": f"file://{root / 'own'}", "site": str(root / "site")}


def test_a_malformed_option_file_is_one_line_naming_option_file_and_line(tmp_path):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    where = write_configs(tmp_path)
    common = ["+experiment=digits_small", "trainer.epochs=1"]
    cases = {  # name: (overrides, the search-path entry holding model/x.yaml)
        "plugin's, in a run": (["model=x", *common], "pkg"),
        "user's own, in a run": (["model=x", *common], "file"),
        # Its first job would train, and the parent run exist, before the launcher loaded x.
        "swept, in a sweep": (["-m", "model=digits_cnn,x", *common], "pkg"),
        "chosen by every job of a sweep": (["-m", "model=x", "optimizer.lr=0.1,0.2", *common], "file"),
    }
    runs = []
    for n, (args, source) in enumerate(cases.values()):
        (tmp_path / str(n)).mkdir()
        runs.append(([*args, f"hydra.searchpath=[{where[source]}]"], tmp_path / str(n)))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [where["site"], os.environ.get("PYTHONPATH")]))}
    results = run_cli_many(runs, env=env, timeout=300)
    problems = []
    for (name, (_, source)), (_, workdir), result in zip(cases.items(), runs, results, strict=True):
        expected = (f"cnnx: error: model=x: {where[source]}/model/x.yaml line 3: expected ',' or '}}', but got "
                    f"'<stream end>' at line 4 (while parsing a flow mapping)")
        if result.returncode != 2 or result.stderr.strip() != expected:
            problems.append(f"{name}: exit {result.returncode}, stderr {result.stderr[-800:]!r}")
        store = workdir / "mlflow.db"
        if store.exists():
            client = MlflowClient(f"sqlite:///{store}")
            ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
            if client.search_runs(ids, run_view_type=ViewType.ALL):
                problems.append(f"{name}: MLflow runs were created")
    assert not problems, "\n".join(problems)


def test_a_yaml_problem_on_one_line_is_said_with_that_line():
    import yaml

    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load("a: 1\nb: [1, 2\nc: 3: 4\n")
    assert yaml_problem(info.value).startswith("line 2: expected ',' or ']', but got ':' at line 3 (while parsing")
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load("a: 1\n b: 2\n")
    assert yaml_problem(info.value) == "line 2: mapping values are not allowed here"
