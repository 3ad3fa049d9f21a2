"""DDP inside Hydra sweeps, and two torchrun "nodes" on loopback (src/trainlab/distributed.py).

The end-to-end runs start real 2-process DDP jobs on CPU (gloo): `pytest -m slow`.
"""

from __future__ import annotations

import ast
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, compose_run, run_cli
from quick import QUICK
from trainlab import distributed, ranks
from trainlab.rundir import RunDirGuard

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
    # nothing trains: the job's overrides are exactly these (no baseline added)
    compose_run(["trainer=ddp_cpu", "lr=0.003"], tmp_path / "job", baseline=False)
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


TORCHRUN_RANK_1 = {"RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"}
RANK_ARGV = {
    "torchrun rank 1": (TORCHRUN_RANK_1, [], ["hydra.output_subdir=null",
                                              "hydra.job.name=train_rank_1"]),
    "srun rank 3": ({"SLURM_PROCID": "3"}, [], ["hydra.output_subdir=null",
                                                "hydra.job.name=train_rank_3"]),
    "rank 0": ({"RANK": "0", "LOCAL_RANK": "0"}, [], []),
    "started by Lightning": ({"LOCAL_RANK": "1"}, ['hydra.run.dir="/r"',
        "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null"], []),
    "own job name kept": (TORCHRUN_RANK_1, ["hydra.job.name=mine"],
                          ["hydra.output_subdir=null"]),
    "own output_subdir kept": (TORCHRUN_RANK_1, ["hydra.output_subdir=.cfg"],
                               ["hydra.job.name=train_rank_1"]),
}  # fmt: skip


@pytest.mark.parametrize(("env", "given", "added"), RANK_ARGV.values(), ids=RANK_ARGV)
def test_a_rank_adds_only_what_its_command_lacks(env, given, added):
    argv = ["train.py", "trainer=ddp", *given]
    assert ranks.rank_argv(argv, env) == [*argv, *added]


def test_the_same_resume_command_on_every_node_continues_the_run_dir(tmp_path, monkeypatch):
    """train.py's rewrite for `resume=` on torchrun's rank 1: continued in the run dir, with
    one hydra.output_subdir=null and a log of its own; rank 0's lock is not its business
    (Lightning's ranks are not rewritten at all: they get rank 0's finished command)."""
    monkeypatch.setenv("TRAINLAB_RUN_ID", os.environ["TRAINLAB_RUN_ID"])  # train.py draws one
    prepare_argv = runpy.run_path(str(ROOT / "train.py"), run_name="train")["prepare_argv"]
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("max_epochs: 2\ncv: {}\n")
    (run / ".hydra" / "overrides.yaml").write_text("- trainer=ddp\n")
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 3}, run / "checkpoints" / "last.ckpt")
    (run / "run.lock").write_text('{"pid": 1, "host": "node-0", "started": "10:00"}')

    for name, value in TORCHRUN_RANK_1.items():
        monkeypatch.setenv(name, value)
    argv = prepare_argv(["train.py", f"resume={run}", "max_epochs=3"])
    assert argv == [
        "train.py", "max_epochs=3", f"resume={run.resolve()}", f"hydra.run.dir={run.resolve()}",
        "hydra.output_subdir=null", "hydra.job.name=train_rank_1",
    ]  # fmt: skip
    lightning_child = [*argv, 'hydra.run.dir="x"', "hydra.job.name=train_ddp_process_1"]
    assert prepare_argv(lightning_child) == lightning_child

    monkeypatch.setenv("RANK", "0")  # rank 0 respects the lock of a process on another host
    with pytest.raises(SystemExit):
        prepare_argv(["train.py", f"resume={run}", "max_epochs=3"])


ONE_DIR_FOR_ALL_NODES = {
    "trainer.num_nodes=2": (["trainer.num_nodes=2"], {}),
    "torchrun over 2 nodes": ([], {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}),
    "torchrun, 2 processes on one node": ([], {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}),
}


@pytest.mark.parametrize(
    ("overrides", "env"), ONE_DIR_FOR_ALL_NODES.values(), ids=ONE_DIR_FOR_ALL_NODES
)
def test_several_nodes_need_a_run_dir_they_share(overrides, env, tmp_path, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = compose_run(overrides, tmp_path / "unused")
    with pytest.raises(SystemExit) as stopped:
        RunDirGuard().on_run_start(cfg)
    assert stopped.value.code == 2
    assert "add hydra.run.dir=<shared path>" in capsys.readouterr().err
    given = compose_run([*overrides, f"hydra.run.dir={tmp_path}/big_run"], tmp_path / "unused")
    RunDirGuard().on_run_start(given)  # the same path on every node: fine
    assert (tmp_path / "big_run").is_dir()


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
        *QUICK,
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
        *QUICK,
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
    from trainlab.search.storage import load_sweep_study

    study = load_sweep_study(sweep)
    assert len(study.trials) == 2
    for trial, record in zip(study.trials, records, strict=True):
        assert trial.params["lr"] == record["plan"]["lr"]
        assert trial.params["batch_size"] == record["plan"]["batch_size"]
        assert f"optimizer={trial.params['optimizer']}" in record["overrides"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_nodes(tmp_path: Path, *args: str, timeout: float = 180) -> tuple[list, str]:
    """Two one-process "nodes" of torchrun on loopback, started with the very same command
    (c10d rendezvous: torchrun numbers the nodes itself, so not even --node-rank differs);
    returns their exit codes (None: timed out) and the ends of their output."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROJECT_ROOT": str(tmp_path)}
    env.pop("HYDRA_FULL_ERROR", None)
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(name, None)
    outputs = [tmp_path / f"node{rank}_{port}.out" for rank in (0, 1)]

    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes=2", "--nproc-per-node=1",
        "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=run{port}",
        "--rdzv-conf=timeout=60",  # a missing node fails the rendezvous, not a hang
        str(ROOT / "train.py"), *args,
    ]  # fmt: skip

    def node(rank: int) -> subprocess.Popen:
        with open(outputs[rank], "w") as log:  # Popen keeps its own copy
            return subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed with its worker below
            )  # fmt: skip

    nodes = [node(0), node(1)]
    deadline = time.perf_counter() + timeout
    try:
        codes = []
        for proc in nodes:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.perf_counter())))
    except subprocess.TimeoutExpired:
        codes = [proc.poll() for proc in nodes]
    finally:
        for proc in nodes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return codes, "\n".join(path.read_text()[-3000:] for path in outputs)


TWO_NODES = ["trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2", "logger=none"]


@pytest.mark.slow
def test_two_torchrun_nodes_on_loopback_train_one_run_with_one_command(tmp_path):
    """The same command on both nodes: rank 1 leaves .hydra/ and the record to rank 0, and
    logs to train_rank_1.log; resumed with the same command on both, it trains further."""
    run = tmp_path / "run"
    started = time.perf_counter()
    codes, output = torchrun_nodes(tmp_path, *TWO_NODES, *QUICK, f"hydra.run.dir={run}")
    assert codes == [0, 0], output
    print(f"two nodes in {time.perf_counter() - started:.1f} s")

    assert [p.name for p in tmp_path.rglob("metrics.json")] == ["metrics.json"]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["plan"]["world_size"] == 2
    hydra = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["job"]["name"] == "train"  # node 0's, not overwritten by node 1
    assert "hydra.output_subdir=null" not in hydra["overrides"]["hydra"]
    assert (run / "train_rank_1.log").exists()
    assert not list(tmp_path.rglob(".hydra"))[1:] and not (tmp_path / "outputs").exists()
    assert not (run / "run.lock").exists()

    codes, output = torchrun_nodes(tmp_path, f"resume={run}", "max_epochs=3")
    assert codes == [0, 0], output
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed" and record["trained"]["epochs"] == 3
    assert record["plan"]["world_size"] == 2
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["max_epochs"] == 3
    hydra = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["job"]["name"] == "train" and hydra["runtime"]["choices"]["trainer"] == "ddp_cpu"
    assert not (run / "run.lock").exists()


@pytest.mark.slow
def test_two_torchrun_nodes_without_a_shared_run_dir_are_both_refused(tmp_path):
    codes, output = torchrun_nodes(tmp_path, *TWO_NODES, *QUICK, timeout=120)
    assert codes is not None and all(code not in (0, None) for code in codes), output
    # the node refused first ends its torchrun agent, whose rendezvous store the other node's
    # agent then loses: that one may kill its worker before it prints (about 1 run in 5)
    assert output.count("add hydra.run.dir=<shared path>") >= 1, output
    # each worker says why in one paragraph; the traceback after it is torchrun's own report
    assert 'train.py", line' not in output and "trainlab" not in output, output
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


@pytest.mark.slow
def test_ddp_ranks_take_the_pruners_decision_together(tmp_path):
    """Rank 0 asks the pruner and broadcasts: rank 1 stops at the same epoch boundary (one
    that trained on would wait in its next all-reduce until the test's timeout)."""
    from optuna.trial import TrialState

    from trainlab.search.storage import load_sweep_study

    sweep = tmp_path / "sweep"
    result = run_train(
        tmp_path,
        "-m",
        "trainer=ddp_cpu",
        "max_epochs=4",
        "trainer.limit_train_batches=3",
        "logger=none",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.99}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = load_sweep_study(sweep).trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
    record = json.loads((sweep / "0" / "metrics.json").read_text())
    assert record["status"] == "pruned" and record["pruned"]["epoch"] == 1
    assert record["plan"]["world_size"] == 2
    assert (sweep / "0" / RANK_1_LOG).exists()
