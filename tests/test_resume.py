"""Nothing lost: a killed run resumes exactly, SIGTERM/SIGINT stop cleanly with a checkpoint,
and a checkpoint can be evaluated on its own."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, cli_env, compose_run, run_cli, train_cmd
from trainlab.checkpoints import epochs_trained
from trainlab.data.batching import EpochShuffle
from trainlab.run import train

# dropout on, so the RNG state matters too; 19 optimizer steps per epoch on digits
EXACT = [
    "deterministic=true",
    "max_epochs=3",
    "checkpoint_every_n_steps=10",
    "model.net.dropout=0.2",
    "logger=none",
]


def record_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def weights_hash(run: Path) -> str:
    """sha256 over every tensor of the final state_dict (weights and metric states)."""
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("unbroken") / "run"
    result = run_cli(*EXACT, f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_run_killed_mid_epoch_resumes_to_exactly_the_same_result(unbroken, tmp_path):
    run = tmp_path / "run"
    # SIGKILL after step 45: in the last epoch (steps 39-57), 5 steps after the step-40 checkpoint
    killed = run_cli(
        *EXACT,
        f"hydra.run.dir={run}",
        "+callbacks.kill._target_=kill_at_step.KillAtStep",
        "+callbacks.kill.step=45",
        env={"PYTHONPATH": str(ROOT / "tests")},
    )
    assert killed.returncode == -signal.SIGKILL
    assert record_of(run)["status"] == "running"  # honest: it never finished

    resumed = run_cli(f"resume={run}", env={"PYTHONPATH": str(ROOT / "tests")})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = record_of(run)
    assert record["status"] == "completed"
    assert record["trained"]["resumed_from"]["global_step"] == 40
    assert record["metrics"] == record_of(unbroken)["metrics"]  # every metric, to the last bit
    assert weights_hash(run) == weights_hash(unbroken)
    assert record["trained"]["optimizer_steps"] == record_of(unbroken)["trained"]["optimizer_steps"]


def sigterm_by(run: Path, callback: str, **where: int):
    """The EXACT run in `run`, signalled by the tests' kill_at_step.<callback>(**where)."""
    stop = [f"+callbacks.stop.{key}={value}" for key, value in where.items()]
    return run_cli(
        *EXACT,
        f"hydra.run.dir={run}",
        f"+callbacks.stop._target_=kill_at_step.{callback}",
        *stop,
        env={"PYTHONPATH": str(ROOT / "tests")},
    )


@pytest.mark.slow  # over 10 s: the default suite stays under ~10 minutes
def test_sigterm_at_an_epoch_end_resumes_to_exactly_the_same_result(unbroken, tmp_path):
    run = tmp_path / "run"
    helpers = {"PYTHONPATH": str(ROOT / "tests")}
    stopped = sigterm_by(run, "SigtermAtEpochEnd", epoch=1)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert record_of(run)["status"] == "interrupted"
    resumed = run_cli(f"resume={run}", env=helpers)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert record_of(run)["metrics"] == record_of(unbroken)["metrics"]
    assert weights_hash(run) == weights_hash(unbroken)


@pytest.mark.slow  # over 10 s: the default suite stays under ~10 minutes
def test_sigterm_at_an_epochs_last_step_stops_after_its_validation_and_resumes(unbroken, tmp_path):
    """Saved at the last step, before the epoch's validation, the checkpoint would hold an
    epoch that Lightning resumes past without validating: a resume with one epoch more then
    trained nothing and found no val/ metric. The stop waits for the epoch's end instead."""
    run = tmp_path / "run"
    helpers = {"PYTHONPATH": str(ROOT / "tests")}
    # digits at batch 64: 19 batches an epoch, so batch 18 is its last
    stopped = sigterm_by(run, "SigtermAtBatch", epoch=1, batch=18)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2 * 19 and epochs_trained(saved) == 2
    # one epoch further than it got (the failing case), which is the unbroken run's 3
    more = run_cli(f"resume={run}", f"max_epochs={epochs_trained(saved) + 1}", env=helpers)
    assert more.returncode == 0, more.stderr[-3000:]
    assert record_of(run)["trained"]["epochs"] == 3
    assert record_of(run)["metrics"] == record_of(unbroken)["metrics"]
    assert weights_hash(run) == weights_hash(unbroken)


@pytest.mark.slow  # over 10 s: the default suite stays under ~10 minutes
def test_sigterm_mid_accumulation_stops_after_the_whole_step_and_resumes_exactly(tmp_path):
    accumulating = [*EXACT, "batch_size=64", "micro_batch_size=32"]  # 2 micro batches a step
    helpers = {"PYTHONPATH": str(ROOT / "tests")}
    unbroken = run_cli(*accumulating, f"hydra.run.dir={tmp_path}/unbroken")
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    run = tmp_path / "run"
    stopped = run_cli(
        *accumulating,
        f"hydra.run.dir={run}",
        "+callbacks.stop._target_=kill_at_step.SigtermAtBatch",
        "+callbacks.stop.epoch=1",
        "+callbacks.stop.batch=4",  # the first micro batch of a step
        env=helpers,
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 19 + 3  # epoch 0's 19 steps, then micro batches 0-5
    resumed = run_cli(f"resume={run}", env=helpers)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert record_of(run)["metrics"] == record_of(tmp_path / "unbroken")["metrics"]
    assert weights_hash(run) == weights_hash(tmp_path / "unbroken")


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_says_interrupted(signum, tmp_path):
    run = tmp_path / "run"
    args = ["max_epochs=500", "checkpoint_every_n_steps=10", "logger=none", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(
        train_cmd(*args), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.ckpt").exists():  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    assert "Traceback" not in stderr
    record = record_of(run)
    assert record["status"] == "interrupted"
    assert record["error"].startswith(f"stopped by {signum.name}; saved ")
    assert record["plan"]["batch_size"] == 64
    stopped_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert stopped_at["global_step"] >= 10 and stopped_at["epoch"] < 500  # saved on the signal

    if signum == signal.SIGTERM:  # continue it, training one epoch further than it got
        more = epochs_trained(stopped_at) + 1
        resumed = run_cli(f"resume={run}", f"max_epochs={more}")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        record = record_of(run)
        assert record["status"] == "completed" and record["trained"]["epochs"] == more
        assert f"max_epochs={more}" in (run / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_checkpoint_evaluates_to_the_runs_own_test_score(unbroken, tmp_path):
    best = record_of(unbroken)["trained"]["best_checkpoint"]
    result = run_cli(
        "train=false", f"ckpt_path={best}", "model.net.dropout=0.2", f"hydra.run.dir={tmp_path}/e"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = record_of(tmp_path / "e")
    assert record["status"] == "completed"
    assert record["trained"]["evaluated"]["checkpoint"] == best
    assert record["metrics"]["test/acc"] == record_of(unbroken)["metrics"]["test/acc"]
    assert record["trained"]["fit_s"] is None  # nothing trained


def test_checkpoint_of_another_model_names_the_options_that_built_it(unbroken, tmp_path):
    result = run_cli("train=false", f"ckpt_path={unbroken}/checkpoints/last.ckpt")
    assert result.returncode == 2
    assert "does not fit the model this config builds (model=mlp)" in result.stderr
    assert "started with: deterministic=true max_epochs=3" in result.stderr


def test_a_requeued_job_continues_from_the_checkpoint_in_its_directory(tmp_path):
    """SLURM requeues a submitit job into the same job directory: it must not start over."""
    first = train(compose_run(["max_epochs=2", "logger=none", "test=false"], tmp_path))
    again = compose_run(["max_epochs=3", "logger=none", "test=false"], tmp_path)
    assert train(again) >= first
    record = record_of(tmp_path)
    assert record["trained"]["resumed_from"]["global_step"] == 2 * 19
    assert record["trained"]["optimizer_steps"] == 3 * 19


def test_a_job_stopped_after_its_last_epoch_only_validates_and_tests_when_it_comes_back(tmp_path):
    first = train(compose_run(["max_epochs=2", "logger=none"], tmp_path))
    tested = record_of(tmp_path)["metrics"]["test/acc"]
    (tmp_path / "metrics.json").unlink()  # as if killed during the test
    again = train(compose_run(["max_epochs=2", "logger=none"], tmp_path))
    record = record_of(tmp_path)
    assert record["status"] == "completed" and again == first  # the best checkpoint's val/acc
    assert record["metrics"]["test/acc"] == tested
    assert record["trained"]["fit_s"] is None and record["trained"]["optimizer_steps"] == 2 * 19


def test_epoch_order_depends_on_seed_and_epoch_only_and_resumes_part_way():
    order = EpochShuffle(10, seed=1)
    order.set_epoch(3)
    full = list(order)
    assert full == list(order) and sorted(full) == list(range(10))
    order.set_epoch(4)
    assert list(order) != full

    resumed = EpochShuffle(10, seed=1, skip=4, skip_epoch=3)
    resumed.set_epoch(3)
    assert list(resumed) == full[4:]
    assert list(resumed) == full  # only the first pass over the resumed epoch is shortened
