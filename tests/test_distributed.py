"""DDP inside Hydra sweeps, and two torchrun "nodes" on loopback (src/trainlab/distributed.py).

The end-to-end runs start real 2-process DDP jobs on CPU (gloo): `pytest -m slow`.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, compose_run, run_cli
from trainlab import distributed

RANK_1_LOG = "train_ddp_process_1.log"


# --- fast: the pieces -------------------------------------------------------------------


def test_the_replaced_builder_is_the_one_the_trainer_uses():
    """If Lightning renames or moves the function, the fix would silently do nothing."""
    import importlib

    launcher = importlib.import_module(distributed.LAUNCHER_MODULE)
    assert callable(getattr(launcher, distributed.COMMAND_BUILDER))
    assert (
        distributed.COMMAND_BUILDER
        in launcher._SubprocessScriptLauncher._call_children_scripts.__code__.co_names
    )


def test_child_command_is_this_jobs_overrides_in_this_jobs_dir(tmp_path):
    compose_run(["trainer=ddp_cpu", "lr=0.003"], tmp_path / "job")
    command, cwd = distributed.child_command(1)
    assert command[0] == sys.executable
    assert command[-5:] == [
        "trainer=ddp_cpu",
        "lr=0.003",
        f'hydra.run.dir="{tmp_path / "job"}"',
        "hydra.job.name=train_ddp_process_1",
        "hydra.output_subdir=null",
    ]
    assert Path(cwd).is_dir()


def test_launch_variables_are_put_back_after_a_job(monkeypatch):
    monkeypatch.setenv("MASTER_PORT", "1234")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    before = distributed.launch_variables()
    os.environ["MASTER_PORT"] = "5678"  # as Lightning's launcher leaves them
    os.environ["LOCAL_RANK"] = "0"
    distributed.reset_after_job(before)
    assert os.environ["MASTER_PORT"] == "1234" and "LOCAL_RANK" not in os.environ


def test_a_single_run_is_left_alone(tmp_path):
    import importlib

    compose_run([], tmp_path / "run")  # RUN mode
    launcher = importlib.import_module(distributed.LAUNCHER_MODULE)
    original = getattr(launcher, distributed.COMMAND_BUILDER)
    with distributed.distributed_job():
        assert getattr(launcher, distributed.COMMAND_BUILDER) is original


# --- slow: real DDP jobs ----------------------------------------------------------------


def run_train(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python train.py <args>` with `project` as the project root (outputs/ lands there)."""
    return run_cli(*args, project=project, timeout=timeout)


def logged_dict(log: Path, prefix: str) -> dict:
    """The dict a log line `... - <prefix>{...}` printed (the last such line)."""
    lines = [line for line in log.read_text().splitlines() if f" - {prefix}" in line]
    assert lines, f"no '{prefix}' line in {log}"
    return ast.literal_eval(lines[-1].split(f" - {prefix}", 1)[1])


def check_sweep(project: Path, sweep: Path, jobs: int) -> list[dict]:
    """Exactly `jobs` job dirs, each a completed 2-rank DDP run whose rank 1 trained the job's
    overrides; only rank 0 wrote the config and the verdict; nothing else anywhere."""
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [str(i) for i in range(jobs)]
    assert not (project / "outputs").exists()  # no stray run dir from a rank
    assert len(list(sweep.glob("**/summary.csv"))) == 1  # one sweep report, by rank 0
    records = []
    for job in (sweep / str(i) for i in range(jobs)):
        record = json.loads((job / "metrics.json").read_text())
        assert record["status"] == "completed", record
        assert record["plan"]["world_size"] == 2
        # .hydra/ is rank 0's (rank 1 writes none: its job name would show here)
        hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra["job"]["name"] == "train" and hydra["mode"] == "MULTIRUN"
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        # rank 1 ran in this job's dir, with this job's overrides, and trained them
        rank_1 = job / RANK_1_LOG
        assert rank_1.exists()
        lines = rank_1.read_text()
        assert f"overrides: {' '.join(overrides)}" in lines
        assert lines.count("Initializing distributed: GLOBAL_RANK: 1") == 1  # one job, no sweep
        assert logged_dict(rank_1, "plan: ") == record["plan"]
        assert logged_dict(rank_1, "optimizer: ") == record["trained"]["optimizer"]
        assert not list(job.glob("**/.hydra"))[1:]
        records.append({"overrides": overrides, **record})
    return records


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_trains_each_job_once_with_both_ranks(tmp_path):
    sweep = tmp_path / "sweep"
    started = time.perf_counter()
    result = run_train(
        tmp_path,
        "-m",
        "trainer=ddp_cpu",
        "lr=1e-3,3e-3",
        "debug=limit",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"2 DDP jobs in {time.perf_counter() - started:.1f} s")
    records = check_sweep(tmp_path, sweep, jobs=2)
    assert [r["plan"]["lr"] for r in records] == [1e-3, 3e-3]
    assert [r["hparams"]["lr"] for r in records] == [1e-3, 3e-3]
    # the report covers the two jobs
    assert len((sweep / "summary.csv").read_text().strip().splitlines()) == 3


@pytest.mark.slow
def test_optuna_trials_are_the_same_on_both_ranks(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(
        tmp_path,
        "-m",
        "trainer=ddp_cpu",
        "debug=limit",
        "logger=none",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = check_sweep(tmp_path, sweep, jobs=2)
    for record in records:  # the trial's sampled lr is what rank 0 (and, above, rank 1) used
        (lr,) = [o for o in record["overrides"] if o.startswith("lr=")]
        assert record["plan"]["lr"] == float(lr.split("=", 1)[1])
    # the study holds exactly these two trials: no rank ran a study of its own
    import optuna

    study = optuna.load_study(study_name="debug", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert len(study.trials) == 2
    for trial, record in zip(study.trials, records, strict=True):
        assert trial.params["lr"] == record["plan"]["lr"]
        assert trial.params["batch_size"] == record["plan"]["batch_size"]
        assert f"optimizer={trial.params['optimizer']}" in record["overrides"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_on_loopback_train_one_run(tmp_path):
    run = tmp_path / "run"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROJECT_ROOT": str(tmp_path)}
    env.pop("HYDRA_FULL_ERROR", None)
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(name, None)

    def node(rank: int) -> subprocess.Popen:
        command = [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
            "--master-addr=127.0.0.1", f"--master-port={port}",
            "--rdzv-conf=timeout=60",  # a missing node fails the rendezvous, not a hang
            str(ROOT / "train.py"),
            "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
            "debug=limit", "logger=none", f"hydra.run.dir={run}",
        ]  # fmt: skip
        if rank:  # node 0 alone saves Hydra's output; node 1 logs to its own file
            command += ["hydra.output_subdir=null", "hydra.job.name=train_node_1"]
        with open(tmp_path / f"node{rank}.out", "w") as log:  # Popen keeps its own copy
            return subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed with its worker below
            )  # fmt: skip

    started = time.perf_counter()
    nodes = [node(0), node(1)]
    deadline = started + 120
    try:
        codes = []
        for proc in nodes:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.perf_counter())))
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for proc in nodes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = "\n".join((tmp_path / f"node{r}.out").read_text()[-2000:] for r in (0, 1))
    assert codes == [0, 0], output
    print(f"two nodes in {time.perf_counter() - started:.1f} s")

    assert [p.name for p in tmp_path.rglob("metrics.json")] == ["metrics.json"]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["plan"]["world_size"] == 2
    hydra = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["job"]["name"] == "train"  # node 0's, not overwritten by node 1
    assert (run / "train_node_1.log").exists()
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_ddp_run_resumes_on_both_ranks(tmp_path):
    """Rank 1 is started with rank 0's rewritten command line: it must not rewrite it again."""
    run = tmp_path / "run"
    first = run_train(
        tmp_path, "trainer=ddp_cpu", "max_epochs=1", "logger=none", f"hydra.run.dir={run}"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_train(tmp_path, f"resume={run}", "max_epochs=2")
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed" and record["plan"]["world_size"] == 2
    assert record["trained"]["epochs"] == 2
    assert record["trained"]["resumed_from"]["epoch"] >= 1
