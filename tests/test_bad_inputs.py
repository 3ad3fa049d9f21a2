"""Bad input through the CLI, as a user would type it: each case must exit non-zero with a
message that names the bad value, print no traceback, and leave nothing that looks like a
finished run (and never touch an earlier run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

# (arguments, a piece of the message that names the value); {files} is a folder of prepared
# inputs: an earlier run, an earlier sweep, an empty text file, a corrupt checkpoint
BAD_INPUTS = [
    # unknown options of config groups (Hydra lists the allowed ones)
    (["optimizer=adamm"], "Available options in 'optimizer'"),
    (["scheduler=linear"], "Available options in 'scheduler'"),
    (["model=resnet"], "Available options in 'model'"),
    (["trainer=tpu"], "Available options in 'trainer'"),
    (["data=imagenet"], "Available options in 'data'"),
    # wrong types
    (["lr=fast"], "lr='fast'"),
    (["batch_size=abc"], "batch_size='abc'"),
    (["max_epochs=2.5"], "max_epochs=2.5 "),
    (["train=maybe"], "train='maybe'"),
    # out-of-range numbers
    (["lr=0"], "lr=0 "),
    (["lr=-0.1"], "lr=-0.1 "),
    (["batch_size=0"], "batch_size=0 "),
    (["batch_size=5000"], "batch_size=5000 is larger than the training split (1167 samples)"),
    (["max_epochs=0"], "max_epochs=0 "),
    (["warmup=-0.1"], "warmup=-0.1 "),
    (["warmup=2.5"], "warmup=2.5 "),
    (["cv.folds=1"], "cv.folds=1 "),
    (["trainer.devices=0"], "devices=0"),
    (["checkpoint_every_n_steps=-5"], "checkpoint_every_n_steps=-5 "),
    (["checkpoint_every_s=-1"], "checkpoint_every_s=-1 "),
    (["checkpoint_every_s=soon"], "checkpoint_every_s='soon' "),
    (["threads=0"], "threads=0 "),
    (["parametrization=mip"], "parametrization='mip' is not allowed"),
    (["parametrization=true"], "parametrization=true is not allowed"),
    (["parametrization=mup", "base_width=0"], "base_width=0 "),
    (["parametrization=mup", "base_width=wide"], "base_width='wide' "),
    (["base_width=64"], "base_width=64 is not allowed with parametrization=sp"),
    (["parametrization=mup", "model=cnn"], "parametrization=mup is not available for this model"),
    (
        ["parametrization=mup", "model.net.hidden_sizes=[]", "base_width=8"],
        "parametrization=mup needs a hidden layer",
    ),
    (
        ["parametrization=mup", "model.net.hidden_sizes=[512,512]", "tune=lr"],
        "tune=lr is not available at parametrization=mup with width 512",
    ),
    # batch plans that do not divide
    (["batch_size=64", "micro_batch_size=48"], "batch_size=64 cannot be split into micro batches"),
    (["precision=fp8"], "precision=fp8"),
    (["optimized_metric=val/auroc"], "optimized_metric='val/auroc' is never logged"),
    # data that is not there
    (["data=text", "data.path={files}/no_such_corpus"], "no_such_corpus' does not exist"),
    (["data=text", "data.path={files}/empty.txt"], "empty.txt' holds no text files"),
    # checkpoints: missing, corrupt, not given
    (["train=false", "ckpt_path={files}/missing.ckpt"], "missing.ckpt does not exist"),
    (["train=false", "ckpt_path={files}/corrupt.ckpt"], "corrupt.ckpt is not a readable"),
    (["train=false"], "train=false evaluates a checkpoint, but no ckpt_path"),
    # resume: not a run, a changed knob, a finished run, part of a sweep
    (["resume={files}"], "is not a run directory"),
    (["resume={files}/run", "lr=0.1"], "only max_epochs may change, but the command also gives"),
    (["resume={files}/run"], "already completed (max_epochs=3)"),
    (["-m", "resume={files}/run"], "cannot be part of a sweep"),
    (["resume={files}/stopped"], "last.ckpt is not a readable checkpoint"),
    (["resume={files}/cosine", "max_epochs=6"], "cannot change max_epochs: its scheduler"),
    # never into an earlier run or sweep
    (["hydra.run.dir={files}/run"], "hydra.run.dir=run already holds a run"),
    (
        ["-m", "lr=1e-3,2e-3", "hydra.sweep.dir={files}/sweep"],
        "hydra.sweep.dir=sweep already holds jobs (0)",
    ),
    # run and sweep dirs that cannot be written: the path and the errno's meaning
    (["hydra.run.dir={files}/empty.txt/run"], "empty.txt/run: Not a directory (ENOTDIR)"),
    (["hydra.run.dir={files}/" + "n" * 256], "File name too long (ENAMETOOLONG)"),
    (["hydra.run.dir=/proc/trainlab_run"], "trainlab_run: No such file or directory (ENOENT)"),
    (
        ["-m", "lr=1e-3", "hydra.sweep.dir={files}/empty.txt/sweep"],
        "the sweep directory empty.txt/sweep cannot be written",
    ),
    # several nodes, each naming its own run dir from its clock
    (["trainer.num_nodes=2"], "add hydra.run.dir=<shared path>"),
    # a run dir that is not its own: the working directory (the repo here) or a folder above
    (["hydra.run.dir="], "hydra.run.dir='' is the working directory"),
    (["hydra.run.dir=."], "hydra.run.dir='.' is the working directory"),
    (["hydra.run.dir=/"], "hydra.run.dir='/' is a folder that holds other work"),
    (["-m", "lr=1e-3", "hydra.sweep.dir=."], "hydra.sweep.dir='.' is the working directory"),
]


def fake_run(path: Path, status: str = "completed", **config) -> Path:
    """A run directory as train.py leaves it (no need to train for these checks); its
    last.ckpt is not a real checkpoint."""
    (path / ".hydra").mkdir(parents=True)
    config = {"max_epochs": 3, "cv": {}, **config}
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["max_epochs=3"]))
    (path / "checkpoints").mkdir()
    (path / "checkpoints" / "last.ckpt").write_bytes(b"stands for a checkpoint")
    (path / "metrics.json").write_text(json.dumps({"status": status, "objective": 0.98}))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    fake_run(folder / "run")
    fake_run(folder / "sweep" / "0")
    fake_run(folder / "stopped", status="interrupted")
    fake_run(folder / "cosine", status="interrupted", scheduler={"length_arg": "T_max"})
    (folder / "empty.txt").write_text("")
    (folder / "corrupt.ckpt").write_bytes(b"PK\x03\x04 not really a zip archive")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def case_id(case) -> str:
    return " ".join(case[0]).replace("{files}/", "").replace("{files}", "<dir>")


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[case_id(c) for c in BAD_INPUTS])
def test_bad_input_is_a_clear_message_not_a_traceback(args, message, files, tmp_path):
    before = snapshot(files)
    args = [a.replace("{files}", str(files)) for a in args]
    result = run_cli(*args, project=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output.replace(f"{files}/", ""), output[-2000:]
    assert "Traceback" not in output
    for metrics in tmp_path.glob("outputs/**/metrics.json"):
        assert json.loads(metrics.read_text())["status"] != "completed"
    assert snapshot(files) == before  # earlier runs untouched
