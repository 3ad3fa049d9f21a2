"""A run or sweep directory that cannot be written is one paragraph that names the path and
the errno's meaning, exit code non-zero, no traceback and nothing that looks like a run
(src/trainlab/rundir.py); files the run writes respect the umask (checkpoints.py, runlock.py).

Tests run as root, for whom a read-only mode stops nothing: the faults are real where the
kernel gives them to root (a parent that is a file, a name too long, /proc, an immutable
directory, /dev/full for ENOSPC) and injected at the os level otherwise (EROFS, EACCES).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import cli_env, run_cli, train_cmd
from trainlab import rundir
from trainlab.checkpoints import AtomicCheckpointIO
from trainlab.runlock import RunLock

# --- unit: make_writable_dir raises the file system's own error, and leaves nothing -------


def _entries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_parent_that_is_a_file_is_enotdir(tmp_path):
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(NotADirectoryError) as caught:
        rundir.make_writable_dir(tmp_path / "file" / "train" / "run")
    assert caught.value.errno == errno.ENOTDIR
    assert _entries(tmp_path) == ["file"]


def test_a_name_too_long_is_enametoolong(tmp_path):
    with pytest.raises(OSError) as caught:
        rundir.make_writable_dir(tmp_path / "outputs" / ("x" * 300) / "run")
    assert caught.value.errno == errno.ENAMETOOLONG
    assert _entries(tmp_path) == []  # outputs/ was created, then removed again


def test_a_full_disk_is_enospc_and_the_new_directories_are_removed(tmp_path, monkeypatch):
    """The probe file is opened on /dev/full: the kernel's own ENOSPC on the write."""
    real_open = os.open

    def open_on_a_full_disk(path, flags, mode=0o777, **kwargs):
        if ".write_probe." in str(path):
            return real_open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(rundir.os, "open", open_on_a_full_disk)
    with pytest.raises(OSError) as caught:
        rundir.make_writable_dir(tmp_path / "a" / "b")
    assert caught.value.errno == errno.ENOSPC
    assert _entries(tmp_path) == []


@pytest.mark.parametrize(
    "code", [errno.EROFS, errno.EACCES, errno.EDQUOT], ids=["EROFS", "EACCES", "EDQUOT"]
)
def test_an_injected_mkdir_error_is_raised_as_is(code, tmp_path, monkeypatch):
    def refusing_mkdir(path, mode=0o777, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(rundir.os, "mkdir", refusing_mkdir)
    with pytest.raises(OSError) as caught:
        rundir.make_writable_dir(tmp_path / "run")
    assert caught.value.errno == code


def test_an_immutable_parent_is_eperm(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        with pytest.raises(PermissionError) as caught:
            rundir.make_writable_dir(locked / "run")
        assert caught.value.errno == errno.EPERM
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)


@pytest.mark.parametrize(
    "code",
    [errno.ENOTDIR, errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENAMETOOLONG, errno.EIO],
    ids=["ENOTDIR", "ENOSPC", "EROFS", "EACCES", "ENAMETOOLONG", "EIO"],
)
def test_the_message_names_the_path_and_the_errnos_meaning(code):
    err = OSError(code, os.strerror(code), "/data/outputs/run")
    message = rundir.fs_fault_message(err, "the run directory /data/outputs/run", "Do this.")
    assert f"/data/outputs/run: {os.strerror(code)} ({errno.errorcode[code]}); " in message
    assert message.endswith("Do this.") and "\n" not in message


def test_a_writable_directory_is_created_and_left_clean(tmp_path):
    rundir.make_writable_dir(tmp_path / "outputs" / "run")
    assert _entries(tmp_path) == ["outputs", "outputs/run"]
    rundir.make_writable_dir(tmp_path / "outputs" / "run")  # exists already: fine, twice
    assert _entries(tmp_path) == ["outputs", "outputs/run"]


# --- through the CLI, with a real or injected errno ----------------------------------------

INJECT = """
import builtins, errno, os

_open, _mkdir, _builtin_open = os.open, os.mkdir, builtins.open


def _open_full(path, flags, mode=0o777, **kw):  # the probe file lands on a full disk
    if ".write_probe." in str(path):
        return _open("/dev/full", os.O_WRONLY)
    return _open(path, flags, mode, **kw)


def _mkdir_erofs(path, mode=0o777, **kw):  # the run directory is on a read-only mount
    if "readonly_mount" in str(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    return _mkdir(path, mode, **kw)


def _open_ckpt_full(file, mode="r", *args, **kw):  # the disk fills up during a checkpoint
    if ".ckpt." in str(file) and str(file).endswith(".tmp"):
        return _builtin_open("/dev/full", mode, *args, **kw)
    return _builtin_open(file, mode, *args, **kw)


fault = os.environ.get("TRAINLAB_TEST_FAULT")
if fault == "probe_enospc":
    os.open = _open_full
elif fault == "mkdir_erofs":
    os.mkdir = _mkdir_erofs
elif fault == "checkpoint_enospc":
    builtins.open = _open_ckpt_full
"""


@pytest.fixture(scope="module")
def injector(tmp_path_factory) -> Path:
    """A sitecustomize that, by TRAINLAB_TEST_FAULT, makes one os call fail in train.py."""
    folder = tmp_path_factory.mktemp("inject")
    (folder / "sitecustomize.py").write_text(textwrap.dedent(INJECT))
    return folder


def faulty(fault: str, injector: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(injector), "TRAINLAB_TEST_FAULT": fault}


def assert_one_paragraph(result: subprocess.CompletedProcess, *pieces: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1, result.stderr[-2000:]
    for piece in pieces:
        assert piece in error[0], error[0]
    return error[0]


UNWRITABLE = {
    "ENOSPC": ("probe_enospc", "disk/run", ["No space left on device (ENOSPC)", "is full"]),
    "EROFS": ("mkdir_erofs", "readonly_mount/run", ["Read-only file system (EROFS)"]),
}


@pytest.mark.parametrize(("fault", "where", "pieces"), UNWRITABLE.values(), ids=UNWRITABLE)
def test_an_unwritable_run_dir_is_one_paragraph_and_leaves_nothing(
    fault, where, pieces, injector, tmp_path
):
    run = tmp_path / where
    result = run_cli(f"hydra.run.dir={run}", project=tmp_path, env=faulty(fault, injector))
    assert result.returncode == 2
    assert_one_paragraph(result, f"the run directory {run} cannot be written", *pieces)
    assert _entries(tmp_path) == []  # no run dir, no .hydra/, no metrics.json, no outputs/


def test_a_full_disk_in_the_sweep_dir_is_refused_before_any_job(injector, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "lr=1e-3,2e-3", f"hydra.sweep.dir={sweep}", project=tmp_path,
        env=faulty("probe_enospc", injector),
    )  # fmt: skip
    assert result.returncode == 2
    assert_one_paragraph(result, f"the sweep directory {sweep} cannot be written", "(ENOSPC)")
    assert _entries(tmp_path) == []


def test_hydra_full_error_shows_the_traceback(tmp_path):
    (tmp_path / "file").write_text("")
    result = run_cli(
        f"hydra.run.dir={tmp_path}/file/run", project=tmp_path, env={"HYDRA_FULL_ERROR": "1"}
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "NotADirectoryError" in result.stderr


def test_a_disk_that_fills_up_during_training_is_one_paragraph_and_a_failed_record(
    injector, tmp_path
):
    run = tmp_path / "run"
    result = run_cli(
        "max_epochs=1", "logger=none", "test=false", f"hydra.run.dir={run}",
        project=tmp_path, env=faulty("checkpoint_enospc", injector),
    )  # fmt: skip
    assert result.returncode == 1
    # names the checkpoint that could not be saved (torch.save's OSError names no file)
    assert_one_paragraph(result, f"{run}/checkpoints/", ".ckpt: No space left on device (ENOSPC)")
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "failed" and "No space left" in record["error"]
    assert not list(run.glob("**/*.ckpt")) and not list(run.glob("**/.*.tmp"))
    assert not (run / "run.lock").exists()


# --- R9: files the run writes respect the umask ---------------------------------------------


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o027], ids=["002", "022", "027"])
def test_checkpoints_and_the_lock_respect_the_umask(umask, tmp_path):
    old = os.umask(umask)
    try:
        AtomicCheckpointIO().save_checkpoint(
            {"state_dict": {"w": torch.ones(2)}}, tmp_path / "a.ckpt"
        )
        with RunLock(tmp_path) as lock:
            lock_mode = lock.path.stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert (tmp_path / "a.ckpt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert lock_mode == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]  # no temp file, no lock


def test_the_checkpoints_a_run_saves_are_group_readable(tmp_path):
    """Through Lightning's Trainer, as a run saves them, under umask 002."""
    run = tmp_path / "run"
    result = subprocess.run(
        train_cmd("max_epochs=1", "logger=none", "test=false", f"hydra.run.dir={run}"),
        env=cli_env(tmp_path), capture_output=True, text=True,
        preexec_fn=lambda: os.umask(0o002),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    saved = sorted(run.glob("checkpoints/*.ckpt"))
    assert [p.name for p in saved] == ["epoch_000.ckpt", "last.ckpt"]
    assert {p.stat().st_mode & 0o777 for p in saved} == {0o664}
