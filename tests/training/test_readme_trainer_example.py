"""The README's Trainer example runs as printed: it trains, stops early, keeps checkpoints."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def trainer_block() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    (block,) = [b for b in re.findall(r"```python\n(.*?)```\n", section, re.S) if "Trainer(" in b]
    return block


def test_the_readmes_trainer_example_trains_and_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(trainer_block(), "README.md (Trainer example)", "exec"), namespace)
    printed = capsys.readouterr().out
    assert re.search(r"^epoch   1/20 train_loss=", printed, re.M)
    assert namespace["history"].test["test_acc"] >= 0.9
    assert str(namespace["history"].test) in printed and "early stopping at epoch" in printed
    assert sorted(tmp_path.joinpath("checkpoints").glob("epoch-*.npz"))
