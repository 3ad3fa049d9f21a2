"""batch_size_warmup: the schedule against a replay of Lightning's own accumulation rule, the
real loop's steps and micro batches, the lr rule per phase, schedules sized in optimizer steps,
the record, resume, and the refusals."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import ROOT, compose_run, run_cli
from trainlab.batch_warmup import (
    accumulation_levels,
    check_batch_size_warmup_knob,
    warmup_schedule,
)
from trainlab.callbacks.batch_size_warmup import BatchSizeWarmup, stepping_batches
from trainlab.checks import ConfigError
from trainlab.plan import make_plan
from trainlab.run import train


def replay(schedule, batches_per_epoch: int, max_epochs: int, max_steps: int | None):
    """Lightning's loop, micro batch by micro batch: a step ends where the micro batch's count
    in the epoch is a multiple of the accumulation, or at the epoch's last micro batch; the
    accumulation is read from the schedule at each step's first micro batch."""
    steps, sizes = 0, []
    for _ in range(max_epochs):
        taken, accumulation = 0, None
        for index in range(batches_per_epoch):
            if accumulation is None or index % accumulation == 0:
                accumulation = schedule.accumulation_at(steps)
                assert index % accumulation == 0, "a step would start mid-accumulation"
            taken += 1
            ready = index + 1
            if ready % accumulation == 0 or ready == batches_per_epoch:
                sizes.append((taken, accumulation, ready == batches_per_epoch))
                steps, taken = steps + 1, 0
                if max_steps and steps >= max_steps:
                    return steps, sizes
    return steps, sizes


CASES = list(
    itertools.product(
        [7, 18, 64, 100],  # micro batches per epoch
        [2, 3, 6, 8, 16],  # the full accumulation
        [0.05, 0.3, 0.7, 5, 40],  # a fraction of the run or steps
        [1, 4],  # max_epochs
        [None, 30],  # max_steps
    )
)


@pytest.mark.parametrize(("batches", "final", "warmup", "epochs", "max_steps"), CASES)
def test_the_schedule_is_what_lightnings_loop_does(batches, final, warmup, epochs, max_steps):
    schedule = warmup_schedule(warmup, final, batches, epochs, max_steps)
    steps, sizes = replay(schedule, batches, epochs, max_steps)
    assert schedule.optimizer_steps == steps
    accumulations = [a for _, a, _ in sizes]
    assert accumulations == sorted(accumulations)  # it only grows
    assert set(accumulations) <= set(accumulation_levels(final))
    # every step but an epoch's last takes exactly its accumulation's micro batches
    assert all(taken == a for taken, a, last in sizes if not last)
    if schedule.changes[-1][1] == final:
        assert all(a == final for a in accumulations[schedule.warmup_steps :])
        assert all(a < final for a in accumulations[: schedule.warmup_steps])


def test_levels_double_then_end_at_the_full_accumulation():
    assert accumulation_levels(1) == (1,)
    assert accumulation_levels(8) == (1, 2, 4, 8)
    assert accumulation_levels(6) == (1, 2, 4, 6)
    assert accumulation_levels(2) == (1, 2)


def test_the_batch_follows_a_straight_line_rounded_down_to_a_doubling():
    # 1000 micro batches in one epoch, warmup over the first 40 %: 400 micro batches
    schedule = warmup_schedule(0.4, 16, 1000, 1, None)
    seen, position = 0, {}
    for step in range(schedule.warmup_steps + 1):
        accumulation = schedule.accumulation_at(step)
        position.setdefault(accumulation, seen)
        seen += accumulation
    for accumulation, start in position.items():  # each level starts once the line passes it
        line = 1 + min(1.0, start / 400) * 15
        assert accumulation <= line + 1e-9
    assert 400 <= position[16] < 400 + 8  # the last doubling's step may run past the end
    by_steps = warmup_schedule(60, 16, 1000, 1, None)
    assert 60 <= by_steps.warmup_steps <= 61


@pytest.mark.parametrize("value", ["abc", -1, 1.5, 2.0, True, [0.1], 1e-300j])
def test_bad_values_are_refused_with_what_is_allowed(value):
    with pytest.raises(ConfigError, match=r"batch_size_warmup=.*below 1 it is the fraction"):
        check_batch_size_warmup_knob(value)


@pytest.mark.parametrize("value", [None, 0, 0.1, 0.999, 1, 500])
def test_good_values_pass(value):
    check_batch_size_warmup_knob(value)


# --- a real Lightning loop ---------------------------------------------------------------------
class Tiny(L.LightningModule):
    def __init__(self, schedule_length=None):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.schedule_length = schedule_length

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        self.schedule_length = stepping_batches(self.trainer)
        return optimizer


class StepRecorder(Callback):
    """Each optimizer step's micro batches, and the lr the optimizer steps with (a pre-hook
    registered after the warmup's, so it sees the scaled lr)."""

    def __init__(self):
        self.micro, self.lrs, self.after = [], [], []
        self._count = 0

    def on_train_start(self, trainer, pl_module):
        trainer.optimizers[0].register_step_pre_hook(
            lambda opt, *_: self.lrs.append(opt.param_groups[0]["lr"])
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._count += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.micro.append(self._count)
        self._count = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_the_loop_steps_and_lrs_follow_the_schedule_and_the_lr_rule():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(200, 4), torch.randn(200, 1))  # 25 micro batches of 8
    plan = make_plan(
        batch_size=64,
        micro_batch_size=8,
        world_size=1,
        lr=0.1,
        lr_scaling="sqrt",
        base_batch_size=64,
    )
    warmup, recorder = BatchSizeWarmup(0.5, plan), StepRecorder()
    module = Tiny()
    trainer = L.Trainer(
        max_epochs=3,
        callbacks=[warmup, recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=8))
    schedule = warmup.schedule
    assert trainer.global_step == schedule.optimizer_steps == module.schedule_length
    steps, sizes = replay(schedule, 25, 3, None)
    assert recorder.micro == [taken for taken, _, _ in sizes]
    # the lr each step used: 0.1 x sqrt(batch / 64), with the schedule's lr restored after it
    expected = [0.1 * math.sqrt(a * 8 / 64) for _, a, _ in sizes]
    assert recorder.lrs == pytest.approx(expected)
    assert set(recorder.after) == {0.1}
    assert plan.batch_size_warmup["optimizer_steps"] == steps
    assert [p["batch_size"] for p in plan.batch_size_warmup["phases"]] == [8, 16, 32, 64]


# --- the pipeline ------------------------------------------------------------------------------
def record(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_a_run_records_its_phases_and_sizes_its_schedule_with_them(tmp_path):
    cfg = compose_run(
        [
            "batch_size=256",
            "batch_size_warmup=0.3",  # micro_batch_size null: starts at base_batch_size, 64
            "lr_scaling=linear",
            "scheduler=warmup_cosine",
            "max_epochs=3",
            "logger=none",
            "test=false",
        ],
        tmp_path,
    )
    train(cfg)
    result = record(tmp_path)
    warm = result["plan"]["batch_size_warmup"]
    assert result["plan"]["micro_batch_size"] == 64
    assert [p["batch_size"] for p in warm["phases"]] == [64, 128, 256]
    assert [p["lr"] for p in warm["phases"]] == pytest.approx([0.001, 0.002, 0.004])
    assert result["trained"]["optimizer_steps"] == warm["optimizer_steps"]
    assert 0 < warm["warmup_steps"] < warm["optimizer_steps"]


def test_the_plan_before_training_is_the_plan_it_trains_with_under_limit_train_batches(
    tmp_path, monkeypatch
):
    import trainlab.run as pipeline

    announced, fit_and_test = [], pipeline.fit_and_test

    def spying(cfg, stop, announce, pruning=None):  # what metrics.json says while it runs
        return fit_and_test(cfg, stop, lambda p: (announced.append(p), announce(p)), pruning)

    monkeypatch.setattr(pipeline, "fit_and_test", spying)
    cfg = compose_run(
        [
            "batch_size=256",
            "micro_batch_size=32",
            "batch_size_warmup=0.3",
            "max_epochs=3",
            "trainer.limit_train_batches=10",
            "trainer.log_every_n_steps=1",
            "logger=csv",
            "test=false",
        ],
        tmp_path,
    )
    train(cfg)
    done = record(tmp_path)
    assert announced[0]["batch_size_warmup"] == done["plan"]["batch_size_warmup"]
    assert (
        done["trained"]["optimizer_steps"] == done["plan"]["batch_size_warmup"]["optimizer_steps"]
    )
    # train/batch_size counts each step's own micro batches: an epoch of 10 ends short
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    column = header.index("train/batch_size")
    logged = [float(r.split(",")[column]) for r in rows[1:] if r.split(",")[column]]
    assert 64.0 in logged  # 2 micro batches of 32 left at an epoch's end, under accumulation 4+
    assert max(logged) == 256.0 and min(logged) == 32.0


def test_the_noise_scale_skips_the_steps_of_one_micro_batch(tmp_path):
    cfg = compose_run(
        [
            "batch_size=256",
            "micro_batch_size=32",
            "batch_size_warmup=4",
            "noise_scale=true",
            "max_epochs=2",
            "logger=none",
            "test=false",
        ],
        tmp_path,
    )
    train(cfg)
    result = record(tmp_path)
    ones = sum(1 for p in result["plan"]["batch_size_warmup"]["phases"] if p["from_step"] < 4)
    noise = result["trained"]["noise_scale"]
    assert ones >= 1 and noise["noise_scale"] > 0
    assert noise["steps_averaged"] < result["trained"]["optimizer_steps"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["batch_size=64", "batch_size_warmup=0.1"], "there is nothing to grow"),
        (["batch_size=128", "micro_batch_size=128", "batch_size_warmup=5"], "nothing to grow"),
        (["batch_size=256", "micro_batch_size=32", "batch_size_warmup=500"], "before the run"),
        (["batch_size=256", "micro_batch_size=32", "batch_size_warmup=0.999"], "before the run"),
    ],
)
def test_a_warmup_that_cannot_grow_or_end_is_refused(args, message, tmp_path):
    cfg = compose_run([*args, "max_epochs=2", "logger=none"], tmp_path)
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert record(tmp_path)["status"] == "failed"  # not a run that looks finished


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["batch_size_warmup=yes"], "batch_size_warmup='yes' is not allowed"),
        (["batch_size_warmup=0.1", "train=false", "ckpt_path=x.ckpt"], "train=false"),
        (["batch_size=256", "batch_size_warmup=0.1", "tune=batch_size"], "Tune first"),
    ],
)
def test_refusals_on_the_command_line_exit_2_with_one_paragraph(args, message, tmp_path):
    result = run_cli(*args, "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # two runs and a kill: ~20 s
def test_a_run_killed_inside_the_warmup_resumes_exactly(tmp_path):
    from test_resume import EXACT, record_of, weights_hash

    warm = [*EXACT, "batch_size=256", "micro_batch_size=32", "batch_size_warmup=0.6"]
    unbroken = run_cli(*warm, f"hydra.run.dir={tmp_path}/unbroken")
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    run = tmp_path / "run"
    killed = run_cli(
        *warm,
        f"hydra.run.dir={run}",
        "checkpoint_every_n_steps=7",
        "+callbacks.kill._target_=kill_at_step.KillAtStep",
        "+callbacks.kill.step=17",
        env={"PYTHONPATH": str(ROOT / "tests")},
    )
    assert killed.returncode < 0
    plan = record_of(tmp_path / "unbroken")["plan"]["batch_size_warmup"]
    assert plan["warmup_steps"] > 17  # killed inside the warmup
    resumed = run_cli(f"resume={run}", env={"PYTHONPATH": str(ROOT / "tests")})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert record_of(run)["trained"]["resumed_from"]["global_step"] == 14
    assert record_of(run)["metrics"] == record_of(tmp_path / "unbroken")["metrics"]
    assert weights_hash(run) == weights_hash(tmp_path / "unbroken")


@pytest.mark.slow  # two gloo ranks: ~25 s
def test_under_ddp_the_warmup_starts_at_one_micro_batch_per_rank(tmp_path):
    run = tmp_path / "run"
    result = run_cli(
        "trainer=ddp_cpu",
        "batch_size=256",
        "micro_batch_size=32",
        "batch_size_warmup=0.3",
        "max_epochs=3",
        "logger=none",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = record(run)
    warm = done["plan"]["batch_size_warmup"]
    assert [p["batch_size"] for p in warm["phases"]] == [64, 128, 256]
    assert done["trained"]["optimizer_steps"] == warm["optimizer_steps"]


@pytest.mark.slow  # a subprocess that builds the data: ~6 s
def test_the_schedule_plot_takes_the_warmups_steps(tmp_path):
    import subprocess
    import sys

    args = ["scheduler=warmup_cosine", "batch_size=512", "batch_size_warmup=0.3"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_schedule.py"), *args, "lr_scaling=sqrt",
         f"out={tmp_path / 'lr.png'}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # digits: 1167 training samples, micro batches of 64 (base_batch_size), 20 epochs
    expected = warmup_schedule(0.3, 8, math.ceil(1167 / 64), 20, None).optimizer_steps
    assert f"{expected} steps" in result.stdout
