"""`python train.py ...` as a user types it: run directory, metrics.json, --help.

Bad input: test_bad_inputs.py."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import CONF, cli_env, run_cli, train_cmd

RUN_DIR = re.compile(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}_[0-9a-f]{6}$")


def run_dirs(project: Path, task: str = "train") -> list[Path]:
    return sorted(p.parent for p in (project / "outputs" / task).glob("*/*/.hydra"))


def cli_in(project: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run train.py with `project` as the project root, so outputs/ lands there."""
    return run_cli(*args, project=project, **kwargs)


def completed_run(project: Path, task: str, *args: str, timeout: float = 300):
    """`python train.py <args>` must succeed with exactly one run directory of `task` under
    `project`, whose metrics.json says completed: returns that directory and the record."""
    result = cli_in(project, *args, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(project, task=task)
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    return run, record


def test_adam_lr_0001_trains_what_it_says(tmp_path):
    run, record = completed_run(tmp_path, "train", "optimizer=adam", "lr=0.001")
    assert RUN_DIR.search(run.as_posix()), run
    assert record["optimized_metric"] == "val/acc_best"
    assert record["objective"] == record["metrics"]["val/acc_best"]
    assert record["hparams"]["optimizer"] == "adam" and record["hparams"]["lr"] == 0.001
    assert record["metrics"]["test/acc"] >= 0.97  # the template's quality bar on digits
    assert record["duration_s"] > 0
    assert record["trained"]["throughput"]["device/samples_per_sec"] > 0  # ThroughputMonitor
    # what actually trained, as built in configure_optimizers ...
    assert record["trained"]["optimizer"]["class"] == "Adam"
    assert {g["lr"] for g in record["trained"]["optimizer"]["param_groups"]} == {0.001}
    # ... and as Lightning's LearningRateMonitor logged it during training
    with open(run / "csv" / "metrics.csv") as f:
        logged = [row["lr-Adam"] for row in csv.DictReader(f) if row.get("lr-Adam")]
    assert logged and {float(v) for v in logged} == {0.001}

    assert (run / ".hydra" / "config.yaml").exists() and (
        run / ".hydra" / "overrides.yaml"
    ).exists()
    assert (run / "train.log").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert Path(record["trained"]["best_checkpoint"]).parent == run / "checkpoints"
    assert not list(run.glob(".metrics.json.*"))  # no temp file left behind


@pytest.mark.slow  # over 10 s: the default suite stays under ~10 minutes
def test_two_runs_started_together_get_their_own_directories(tmp_path):
    cmd = train_cmd("debug=fdr", "logger=none")
    procs = [
        subprocess.Popen(
            cmd, env=cli_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = run_dirs(tmp_path, task="debug")
    assert len(runs) == 2
    for run in runs:
        record = json.loads((run / "metrics.json").read_text())
        assert (record["status"], record["objective"]) == ("debug", None)  # not a result


# what this template ships: a fork may add options, groups and knobs, never needs to list them
SHIPPED_OPTIONS = {
    "callbacks": {"checkpoint", "default", "early_stopping", "ema", "epoch_table", "lr_monitor",
                  "none", "progress", "rich_progress_bar", "throughput"},
    "data": {"breast_cancer", "diabetes", "digits", "text"},
    "debug": {"fdr", "limit", "overfit", "profiler"},
    "experiment": {"digits_cnn_onecycle", "digits_mlp_adamw_cosine", "gpt_medium", "gpt_small"},
    "hparams_search": {"optuna"},
    "logger": {"csv", "many", "mlflow", "none", "tensorboard", "wandb"},
    "model": {"cnn", "gpt", "mlp"},
    "optimizer": {"adafactor", "adagrad", "adam", "adamw", "adamw_schedulefree", "adopt", "lamb",
                  "lars", "lion", "muon", "nadam", "radam", "rmsprop", "sgd", "sgd_momentum",
                  "sgd_nesterov", "soap"},
    "paths": {"default"},
    "scheduler": {"constant_warmup", "cosine", "exponential", "inverse_sqrt", "multistep", "none",
                  "onecycle", "plateau", "step", "warmup_cosine", "warmup_linear", "wsd"},
    "task": {"binary", "language_model", "multiclass", "regression"},
    "trainer": {"cpu", "ddp", "ddp_cpu", "default", "fsdp", "gpu", "mps"},
    "tune": {"all", "batch_size", "lr", "none"},
}  # fmt: skip
SHIPPED_KNOBS = (
    "lr", "weight_decay", "weight_decay_groups", "batch_size", "micro_batch_size", "lr_scaling",
    "base_batch_size", "max_epochs", "warmup", "min_lr_ratio", "seed", "precision", "grad_clip",
    "compile", "optimized_metric", "optimized_direction", "test", "cv.folds", "train",
    "ckpt_path", "resume", "checkpoint_every_n_steps", "deterministic", "threads",
)  # fmt: skip


def help_groups(stdout: str) -> dict[str, set[str]]:
    """`group: a, b, c` lines of --help's "Configuration groups" section."""
    section = stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    found = re.findall(r"^(\w+): (.+)$", section, flags=re.MULTILINE)
    return {group: set(options.split(", ")) for group, options in found}


def test_help_lists_every_group_and_option():
    """Every group folder and option file in conf/ (read now: a fork's own ones too) is listed,
    the shipped ones among them; the footer names the shipped knobs, and the composed config
    shows every top-level knob of conf/train.yaml."""
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr[-3000:]
    listed = help_groups(result.stdout)
    on_disk = {
        folder.name: {p.stem for p in folder.glob("*.yaml")}
        for folder in CONF.iterdir()
        if folder.is_dir() and folder.name != "hydra" and any(folder.glob("*.yaml"))
    }
    assert SHIPPED_OPTIONS.keys() <= on_disk.keys()  # the template's groups are still there
    for group, options in on_disk.items():
        assert group in listed, group
        assert options <= listed[group], (group, options - listed[group])
    for group, options in SHIPPED_OPTIONS.items():
        assert options <= listed[group], (group, options - listed[group])

    footer = result.stdout.split("Top-level knobs", 1)[1]
    named = set(re.findall(r"\w+(?:\.\w+)*", footer.split("Any other value", 1)[0]))
    assert set(SHIPPED_KNOBS) <= named, set(SHIPPED_KNOBS) - named
    config = result.stdout.split("== Config ==", 1)[1]
    knobs = yaml.safe_load((CONF / "train.yaml").read_text()).keys() - {"defaults"}
    for knob in knobs:
        assert re.search(rf"^{knob}:", config, flags=re.MULTILINE), knob
