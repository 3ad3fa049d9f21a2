"""README's "Fork it" steps, followed in a copy of the project: the files the guide shows are
written as it shows them, nothing else is edited, and the new data set trains with the
shipped model and with the guide's new model."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, cli_env


def guide_files() -> dict[str, str]:
    """The code blocks of README's "Fork it" section whose first line names a file."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Fork it", 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```(?:python|yaml)\n(.*?)```", section, flags=re.S):
        first, _, rest = block.partition("\n")
        path = re.fullmatch(r"# ((?:src|conf)/\S+\.(?:py|yaml))", first.strip())
        if path:
            files[path.group(1)] = rest if first.startswith("# src") else block
    return files


def test_the_guide_shows_a_data_module_its_config_and_a_model_config():
    assert set(guide_files()) == {
        "src/trainlab/data/wine.py",
        "conf/data/wine.yaml",
        "conf/model/wide_mlp.yaml",
    }


@pytest.fixture
def fork(tmp_path) -> Path:
    project = tmp_path / "fork"
    ignore = shutil.ignore_patterns("*.egg-info", "__pycache__")
    for part in ("conf", "src"):
        shutil.copytree(ROOT / part, project / part, ignore=ignore)
    shutil.copy(ROOT / "train.py", project)
    for path, text in guide_files().items():
        (project / path).write_text(text)
    return project


def train_in(project: Path, *args: str) -> dict:
    env = cli_env(project, PYTHONPATH=str(project / "src"))  # the fork's package, not ours
    result = subprocess.run(
        [sys.executable, str(project / "train.py"), *args, "logger=none"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = [json.loads(p.read_text()) for p in project.glob("outputs/**/metrics.json")]
    shutil.rmtree(project / "outputs")
    return record


@pytest.mark.slow  # over 10 s: two runs in fresh processes
def test_a_data_set_and_a_model_added_by_the_guide_train(fork):
    record = train_in(fork, "data=wine", "max_epochs=3")
    assert record["status"] == "completed"
    assert (record["optimized_metric"], record["direction"]) == ("val/acc_best", "maximize")
    assert record["objective"] > 0.5  # 3 classes: chance is a third
    (group,) = record["trained"]["optimizer"]["param_groups"]
    assert group["params"] == 13 * 256 + 256 + 256 * 256 + 256 + 256 * 3 + 3  # sized 13 -> 3

    record = train_in(fork, "data=wine", "model=wide_mlp", "max_epochs=2", "cv.folds=3")
    assert record["status"] == "completed" and len(record["trained"]["folds"]) == 3
    (group,) = record["trained"]["folds"][0]["optimizer"]["param_groups"]
    assert group["params"] == 13 * 1024 + 1024 + 1024 * 3 + 3
