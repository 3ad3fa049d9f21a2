"""Resume continues the same run (src/trainlab/resume.py, resumed.py, runlock.py): from its
saved config whatever today's defaults say, never while another process trains it, and never
from a checkpoint whose weights are NaN or inf."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, cli_env, run_cli, train_cmd
from trainlab import runlock
from trainlab.resumed import differences
from trainlab.runlock import LOCK_FILE, RunDirHeld, RunLock, check_not_held


def record_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def plant_lock(run: Path, **holder) -> Path:
    path = run / LOCK_FILE
    path.write_text(json.dumps({"started": "2026-12-01 10:00:00", **holder}))
    return path


@pytest.fixture
def sleeper():
    """A live process of this host that is not this test."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


# --- the lock, judged -------------------------------------------------------------------


def test_a_run_lock_says_who_holds_it_and_goes_away(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    with RunLock(tmp_path) as lock:
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["slurm_job_id"] == "77"
    assert not (tmp_path / LOCK_FILE).exists()


LIVE_OR_UNKNOWN = {
    "live process on this host": (lambda p: {"pid": p, "host": socket.gethostname()}, None,
                                  "is being trained right now by pid"),
    "another host": (lambda p: {"pid": 1, "host": "node-17"}, None, "rm "),
    "another host, another SLURM job": (lambda p: {"pid": 1, "host": "node-17",
                                                   "slurm_job_id": "41"}, "42", "SLURM job 41"),
    "unreadable lock": (None, None, "cannot be read"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("holder", "job", "message"), LIVE_OR_UNKNOWN.values(), ids=LIVE_OR_UNKNOWN
)
def test_a_lock_that_may_be_live_is_respected(holder, job, message, sleeper, tmp_path, monkeypatch):
    if job:
        monkeypatch.setenv("SLURM_JOB_ID", job)
    if holder is None:
        (tmp_path / LOCK_FILE).write_text("{half written")
    else:
        plant_lock(tmp_path, **holder(sleeper.pid))
    before = (tmp_path / LOCK_FILE).read_bytes()
    with pytest.raises(RunDirHeld, match=message):
        check_not_held(tmp_path)
    with pytest.raises(RunDirHeld, match=message):
        RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_FILE).read_bytes() == before  # left as it was


STALE = {
    "dead process on this host": (lambda: {"pid": dead_pid(), "host": socket.gethostname()},
                                  None, "on this host is gone"),
    "recycled pid": (lambda: {"pid": os.getppid(), "host": socket.gethostname(),
                              "process_start": "another-boot/1"}, None, "on this host is gone"),
    "this very process": (lambda: {"pid": os.getpid(), "host": socket.gethostname()}, None,
                          "this very process"),
    "same SLURM job requeued": (lambda: {"pid": 1, "host": "node-17", "slurm_job_id": "42"},
                                "42", "SLURM job 42 was requeued (it ran on node-17)"),
}  # fmt: skip


@pytest.mark.parametrize(("holder", "job", "reason"), STALE.values(), ids=STALE)
def test_a_stale_lock_is_taken_over(holder, job, reason, tmp_path, monkeypatch, caplog):
    if job:
        monkeypatch.setenv("SLURM_JOB_ID", job)
    plant_lock(tmp_path, **holder())
    check_not_held(tmp_path)  # a resume may go on
    with caplog.at_level(logging.WARNING, logger=runlock.__name__), RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["token"] == lock.me["token"]
    assert reason in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left, not even aside


def test_a_lock_taken_over_by_another_process_is_not_removed_by_the_first(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    plant_lock(tmp_path, pid=1, host="node-17", token="theirs")  # a requeued job took it
    lock.release()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["token"] == "theirs"


# --- what changed since the run started, listed ----------------------------------------


def test_differences_name_changed_options_once_and_knobs_with_old_and_new_values():
    saved = {"lr": 0.001, "seed": 42, "max_epochs": 3, "optimizer": {"_target_": "Adam"}}
    today = {"lr": 0.002, "seed": 42, "max_epochs": 20, "optimizer": {"_target_": "SGD"}, "x": 1}
    lines = differences(saved, {"optimizer": "adam"}, today, {"optimizer": "sgd"})
    assert lines == [
        "optimizer (option): 'adam' -> 'sgd'",  # its keys are not listed one by one
        "lr: 0.001 -> 0.002",
        "x: (absent) -> 1 (a knob added since: today's value used)",
    ]  # max_epochs is the resume command's to change: not a difference


# --- through the CLI ---------------------------------------------------------------------


@pytest.fixture
def project(tmp_path) -> Path:
    """A throwaway copy of the project whose conf/ a test may change."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(ROOT / "train.py", folder)
    shutil.copytree(ROOT / "conf", folder / "conf")
    return folder


def in_project(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(project / "train.py"), *args],
        cwd=project, env={**cli_env(project), **env}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def change_defaults(conf: Path, **changes: str) -> None:
    """conf/train.yaml's default of each key (a knob or a group's option) set to a new value,
    whatever it was (a fork's defaults too)."""
    text = (conf / "train.yaml").read_text()
    for key, new in changes.items():
        text, n = re.subn(rf"^(  - )?{key}: *\S+", rf"\g<1>{key}: {new}", text, flags=re.M)
        assert n == 1, key
    (conf / "train.yaml").write_text(text)


@pytest.mark.slow  # over 10 s: the default suite stays under ~10 minutes
def test_resume_continues_the_saved_run_after_the_defaults_changed_and_twice(project):
    run = project / "run"
    # the defaults the run starts with, whatever this checkout's are (a fork's): as defaults,
    # not overrides, so that the resume compares them with the changed ones
    change_defaults(project / "conf", optimizer="adam", lr="0.001", seed="42")
    first = in_project(project, "max_epochs=1", "scheduler=step", "logger=none", "test=false",
                       f"hydra.run.dir={run}")  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    change_defaults(project / "conf", optimizer="sgd", lr="0.01", seed="7")
    plant_lock(run, pid=dead_pid(), host=socket.gethostname())  # killed with -9 earlier

    again = in_project(project, f"resume={run}", "max_epochs=2")
    assert again.returncode == 0, again.stderr[-3000:]
    said = again.stdout + again.stderr
    assert "the defaults changed since this run started" in said
    for change in ("optimizer (option): 'adam' -> 'sgd'", "lr: 0.001 -> 0.01", "seed: 42 -> 7"):
        assert change in said
    record = record_of(run)
    assert record["status"] == "completed" and record["trained"]["epochs"] == 2
    assert record["hparams"]["optimizer"] == "adam" and record["hparams"]["seed"] == 42
    assert record["trained"]["optimizer"]["class"] == "Adam"
    assert record["plan"]["lr"] == 0.001
    assert "taking over the run's lock" in (run / "train.log").read_text()
    assert not (run / LOCK_FILE).exists()

    saved = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert saved["max_epochs"] == 2 and saved["lr"] == 0.001 and saved["seed"] == 42
    hydra = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["job"]["name"] == "train" and hydra["runtime"]["choices"]["optimizer"] == "adam"
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert overrides == ["max_epochs=2", "scheduler=step", "logger=none", "test=false"]
    assert hydra["overrides"]["task"] == overrides

    done = in_project(project, f"resume={run}")  # the second resume reads max_epochs=2
    assert done.returncode == 2 and "already completed (max_epochs=2)" in done.stderr

    # requeued by SLURM onto another node: the lock of the first incarnation is taken over
    plant_lock(run, pid=12345, host="node-17", slurm_job_id="4242")
    third = in_project(project, f"resume={run}", "max_epochs=3", SLURM_JOB_ID="4242")
    assert third.returncode == 0, third.stderr[-3000:]
    assert record_of(run)["trained"]["epochs"] == 3
    assert record_of(run)["hparams"]["optimizer"] == "adam"
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["max_epochs"] == 3
    assert "max_epochs=3" in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert "SLURM job 4242 was requeued" in (run / "train.log").read_text()
    assert not (run / LOCK_FILE).exists()


def test_a_run_holds_its_lock_while_it_trains_and_a_resume_is_refused(tmp_path):
    run = tmp_path / "run"
    args = ["max_epochs=500", "checkpoint_every_n_steps=10", "logger=none", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(
        train_cmd(*args), env=cli_env(tmp_path), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "last.ckpt").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == proc.pid and holder["host"] == socket.gethostname()

        refused = run_cli(f"resume={run}", "max_epochs=600", project=tmp_path)
        assert refused.returncode == 2
        assert f"is being trained right now by pid {proc.pid}" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert record_of(run)["status"] == "interrupted"
    assert not (run / LOCK_FILE).exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One epoch of a run that can be extended (scheduler=none)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli("max_epochs=1", "logger=none", "test=false", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def poison(path: Path, value: float) -> None:
    """Puts `value` into the network's first weight (not a metric's state such as val_acc_best,
    whose +-inf is its legitimate start)."""
    checkpoint = torch.load(path, weights_only=True)
    weights = [t for name, t in checkpoint["state_dict"].items() if name.startswith("net.")]
    weights[0].view(-1)[0] = value
    torch.save(checkpoint, path)


NONFINITE = {
    "NaN": (float("nan"), False, "start a new run from its best checkpoint"),
    "inf": (float("inf"), False, "start a new run from its best checkpoint"),
    "NaN, best too": (float("nan"), True, "Do not resume it: start it again with a smaller lr"),
}


@pytest.mark.parametrize(("value", "best_too", "advice"), NONFINITE.values(), ids=NONFINITE)
def test_a_last_checkpoint_with_nonfinite_weights_is_refused_with_its_step(
    value, best_too, advice, trained, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    best = run / "checkpoints" / "epoch_000.ckpt"
    for state in checkpoint["callbacks"].values():  # the copy's own best checkpoint
        if isinstance(state, dict) and state.get("best_model_path"):
            state["best_model_path"] = str(best)
    torch.save(checkpoint, last)
    poison(last, value)
    if best_too:
        poison(best, value)
    before = (run / "metrics.json").read_bytes()

    result = run_cli(f"resume={run}", "max_epochs=2", project=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "its last checkpoint (last.ckpt, written at step 19) holds non-finite" in result.stderr
    assert advice in result.stderr
    if not best_too:
        assert f"ckpt_path={best}" in result.stderr
    assert (run / "metrics.json").read_bytes() == before


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_a_run_whose_overrides_hold_an_interpolation_resumes(tmp_path):
    """The saved overrides are read as typed, not resolved: `${task_name}` stays itself."""
    run = tmp_path / "run"
    args = ["callbacks.checkpoint.filename=${task_name}", f"hydra.run.dir={run}"]
    assert run_cli("max_epochs=1", *args, project=tmp_path).returncode == 0
    resumed = run_cli(f"resume={run}", "max_epochs=2", project=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert record_of(run)["status"] == "completed"
    assert (run / "checkpoints" / "train.ckpt").is_file()


def test_a_resume_in_place_keeps_the_earlier_rows_of_csv_metrics(tmp_path):
    """Lightning's CSV writer deletes an existing metrics.csv when it opens; the template's
    CSVLogger writes the earlier rows back ahead of the resumed run's."""
    import csv

    run = tmp_path / "run"
    first = run_cli("max_epochs=2", "test=false", "logger=csv", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    path = run / "csv" / "metrics.csv"
    before = list(csv.DictReader(path.open()))
    more = run_cli("max_epochs=3", f"resume={run}")
    assert more.returncode == 0, more.stderr[-2000:]
    after = list(csv.DictReader(path.open()))
    assert {r["epoch"] for r in after if r["epoch"]} == {"0", "1", "2"}
    assert len(after) > len(before)
    columns = before[0].keys()
    assert [{k: r[k] for k in columns} for r in after[: len(before)]] == before
