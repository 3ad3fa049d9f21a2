"""Every fault is one clear paragraph and a record (issue 11, part 3): through the CLI, as a
user types it; the record writer never fails on a value; records respect the umask."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import cli_env, run_cli, train_cmd
from trainlab.faults import describe
from trainlab.record import write_json_atomic

# (arguments, exit code, a piece of the paragraph, the record's hparams that must be kept)
FAULTS = [
    (["lr=inf"], 2, "lr=inf is not allowed", {"lr": "inf"}),
    (["lr=nan"], 2, "lr=nan is not allowed", {"lr": "nan"}),
    (["lr=1e300"], 2, "at most 3.4e38", {"lr": 1e300}),
    (["weight_decay=nan"], 2, "weight_decay=nan is not allowed", {"weight_decay": "nan"}),
    (["batch_size=[32,64]"], 2, "batch_size=[32, 64] is not allowed", {"batch_size": [32, 64]}),
    (["max_epochs=null"], 2, "max_epochs=null is not allowed", {"max_epochs": None}),
    (
        ["model.net.hidden_sizes=abc"],
        1,
        "model.net (trainlab.models.nets.MLP) could not be built",
        {},
    ),
    (["data.val_fraction=0.9", "data.test_fraction=0.3"], 2, "nothing is left to train on", {}),
    (["precision=16"], 2, "precision=16 is not available on this CPU", {}),
    (["lr=${nope}"], 2, "the config at lr is invalid: Interpolation key 'nope' not found", {}),
    (["+optimizer.betas=0.9"], 2, "optimizer=adam (torch.optim.adam.Adam with", {}),
    (["scheduler=step", "scheduler.factory.step_size=abc"], 2, "scheduler=step cannot be", {}),
]


@pytest.mark.parametrize(
    ("args", "code", "message", "hparams"), FAULTS, ids=[" ".join(c[0]) for c in FAULTS]
)
def test_a_fault_is_one_paragraph_and_a_failed_record(args, code, message, hparams, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        *args,
        "max_epochs=1" if "max_epochs" not in args[0] else "seed=1",
        f"hydra.run.dir={run_dir}",
        project=tmp_path,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert errors[0] in (run_dir / "train.log").read_text()  # the log has what was printed
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed"
    assert message in record["error"]
    for key, value in hparams.items():
        assert record["hparams"][key] == value
    if code == 1:  # not a bad value: the traceback is kept in the run's log, not printed
        assert "Traceback" in (run_dir / "train.log").read_text()
        assert f"traceback in {run_dir / 'train.log'}" in errors[0]


def test_hydra_full_error_prints_the_traceback(tmp_path):
    result = run_cli(
        "model.net.hidden_sizes=abc",
        f"hydra.run.dir={tmp_path / 'run'}",
        project=tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_a_run_record_respects_the_umask(tmp_path):
    result = subprocess.run(
        train_cmd("lr=nan", f"hydra.run.dir={tmp_path / 'run'}"),
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o002),
    )
    assert result.returncode == 2
    assert stat.S_IMODE((tmp_path / "run" / "metrics.json").stat().st_mode) == 0o664


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077, 0o000])
def test_records_get_the_mode_the_umask_allows(umask, tmp_path):
    before = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "metrics.json", {"status": "completed"})
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~umask


VALUES = [
    (float("nan"), "nan"),
    (float("inf"), "inf"),
    (-math.inf, "-inf"),
    (torch.tensor(0.5), 0.5),
    (torch.tensor([1.0, float("nan")]), [1.0, "nan"]),
    (OmegaConf.create([1, 2]), [1, 2]),
    (OmegaConf.create({"a": "${b}", "b": 1}), {"a": "${b}", "b": 1}),
    ((1, {2}), [1, [2]]),
    (Path("/x"), "/x"),
    ({1: None}, {"1": None}),
]


@pytest.mark.parametrize(("value", "written"), VALUES, ids=[repr(v[0])[:30] for v in VALUES])
def test_the_record_writer_never_fails_on_a_value(value, written, tmp_path):
    write_json_atomic(tmp_path / "r.json", {"v": value})
    assert json.loads((tmp_path / "r.json").read_text())["v"] == written


@pytest.mark.parametrize(
    ("err", "message"),
    [
        (OSError(28, "No space left on device", "/runs/x/metrics.json"), "No space left on device"),
        (OSError(30, "Read-only file system", "/runs/x"), "/runs/x: Read-only file system (EROFS)"),
        (RuntimeError("line one\n\n   line two"), "RuntimeError: line one line two"),
        (ValueError("x" * 5000), "..."),
    ],
)
def test_describe_is_one_paragraph_that_names_the_fault(err, message):
    text = describe(err)
    assert message in text and "\n" not in text and len(text) <= 1200


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_evaluating_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    run = tmp_path / "run"
    assert run_cli("max_epochs=1", f"hydra.run.dir={run}", project=tmp_path).returncode == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    name = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("nan"))
    torch.save(checkpoint, ckpt)
    result = run_cli("train=false", f"ckpt_path={ckpt}", project=tmp_path)
    assert result.returncode == 2
    assert f"holds NaN or inf weights ({name}; written at step" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_an_evaluation_records_the_hparams_of_the_run_that_trained(tmp_path):
    run, evaluation = tmp_path / "run", tmp_path / "eval"
    trained = run_cli("max_epochs=1", "lr=0.003", f"hydra.run.dir={run}", project=tmp_path)
    assert trained.returncode == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    args = ("train=false", f"ckpt_path={ckpt}", f"hydra.run.dir={evaluation}")
    assert run_cli(*args, project=tmp_path).returncode == 0
    hparams = json.loads((evaluation / "metrics.json").read_text())["hparams"]
    assert hparams["lr"] == 0.003 and hparams["evaluated"] == str(ckpt)
