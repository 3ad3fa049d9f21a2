"""noise_scale=true: the two-batch estimates of |G|² and tr(Σ) (exact in expectation), the
estimator in a real Lightning loop against the noise scale computed from per-sample gradients,
resume continuing the averages, the record, and the refusals."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import run_cli
from trainlab.callbacks.noise_scale import (
    GradientNoiseScale,
    MovingAverages,
    two_batch_estimates,
)


def test_the_two_batch_estimates_are_unbiased_on_synthetic_gradients():
    # per-sample gradients G + noise, noise ~ N(0, diag(var)): |G|² and tr(Σ) are known
    torch.manual_seed(0)
    G = torch.tensor([0.3, -0.2, 0.1, 0.05])
    var = torch.tensor([1.0, 4.0, 0.25, 2.0])
    small, big, trials = 4, 32, 20000
    noise = torch.randn(trials, big, 4, dtype=torch.float64) * var.sqrt()
    samples = G + noise
    micro = samples.view(trials, big // small, small, 4).mean(2)  # B/b micro batches
    small_sq = micro.pow(2).sum(-1).mean(1)
    big_sq = samples.mean(1).pow(2).sum(-1)
    grad_sq, trace = two_batch_estimates(small_sq, small, big_sq, big)
    assert float(grad_sq.mean()) == pytest.approx(float(G.pow(2).sum()), rel=0.03)
    assert float(trace.mean()) == pytest.approx(float(var.sum()), rel=0.03)


def test_two_batch_estimates_need_two_batch_sizes():
    with pytest.raises(ValueError, match="two batch sizes"):
        two_batch_estimates(1.0, 8, 1.0, 8)


def test_the_moving_averages_are_bias_corrected_and_round_trip():
    averages = MovingAverages(decay=0.9)
    assert averages.values() is None and averages.noise_scale() is None
    averages.update(torch.tensor(2.0, dtype=torch.float64), torch.tensor(10.0, dtype=torch.float64))
    assert averages.values() == pytest.approx((2.0, 10.0))  # corrected: not 0.2 and 1.0
    assert averages.noise_scale() == pytest.approx(5.0)
    averages.update(torch.tensor(-1.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64))
    before = averages.values()
    averages.update(torch.tensor(float("inf")), torch.tensor(float("nan")))  # an overflow
    assert averages.values() == before  # skipped: not even in the bias correction
    copy = MovingAverages()
    copy.load_state_dict(averages.state_dict())
    assert copy.values() == pytest.approx(averages.values())
    assert copy.updates == 3 and copy.decay == 0.9
    negative = MovingAverages()
    negative.update(torch.tensor(-1.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64))
    assert negative.noise_scale() is None  # not a batch size yet


class Linear(L.LightningModule):
    """Least squares with lr 0: the gradient distribution stays that of the start."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.layer(x).squeeze(-1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def exact_noise_scale(module: Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    """tr(Σ) / |G|² from every sample's own gradient."""
    grads = []
    for xi, yi in zip(x, y, strict=True):
        module.zero_grad()
        nn.functional.mse_loss(module.layer(xi[None]).squeeze(-1), yi[None]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in module.parameters()]))
    grads = torch.stack(grads).double()
    mean = grads.mean(0)
    return float(grads.var(0).sum() / mean.pow(2).sum())


@pytest.mark.parametrize("micro, batch", [(8, 64), pytest.param(16, 128, marks=pytest.mark.slow)])
def test_the_estimator_in_a_lightning_loop_finds_the_noise_scale_of_per_sample_gradients(
    micro, batch
):
    torch.manual_seed(0)
    x = torch.randn(8192, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 3.0 + 2.0 * torch.randn(8192)
    module = Linear()
    exact = exact_noise_scale(module, x, y)
    estimator = GradientNoiseScale(micro, batch, decay=0.995)
    trainer = L.Trainer(
        max_steps=600, accumulate_grad_batches=batch // micro, callbacks=[estimator],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=100,
    )  # fmt: skip
    loader = DataLoader(TensorDataset(x, y), batch_size=micro, shuffle=True, drop_last=True)
    trainer.fit(module, loader)
    summary = estimator.summary()
    assert summary["steps_averaged"] == 600
    assert summary["noise_scale"] == pytest.approx(exact, rel=0.15)
    assert [step for step, _ in summary["trajectory"]] == list(range(100, 601, 100))
    assert trainer.callback_metrics["train/noise_scale"] == pytest.approx(summary["noise_scale"])
    # the hooks are gone after fit: a later backward is not counted
    module.zero_grad()
    module.training_step((x[:4], y[:4]), 0).backward()
    assert estimator._micro_grads == [] and estimator._micro_norms == []


QUICK = ["data=digits", "max_epochs=2", "test=false", "logger=csv"]


def test_noise_scale_true_is_recorded_logged_and_resumed(tmp_path):
    run = tmp_path / "run"
    args = [*QUICK, "noise_scale=true", "batch_size=128", "micro_batch_size=32"]
    first = run_cli(*args, "trainer.log_every_n_steps=2", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((run / "metrics.json").read_text())
    estimate = record["trained"]["noise_scale"]
    assert estimate["micro_batch_size"] == 32 and estimate["batch_size"] == 128
    assert estimate["noise_scale"] > 0 and estimate["trace_covariance"] > 0
    assert estimate["trajectory"][-1][1] == pytest.approx(estimate["noise_scale"], rel=1e-5)
    assert record["metrics"]["train/noise_scale"] == pytest.approx(estimate["noise_scale"])
    logged = (next((run / "csv").rglob("metrics.csv"))).read_text()
    assert "train/noise_scale" in logged.splitlines()[0]
    # resume into more epochs: the averages continue from the checkpoint's
    more = run_cli("max_epochs=3", f"resume={run}")
    assert more.returncode == 0, more.stderr[-2000:]
    resumed = json.loads((run / "metrics.json").read_text())["trained"]["noise_scale"]
    assert resumed["steps_averaged"] > estimate["steps_averaged"]
    # the points up to the checkpoint are kept (the last one is the record's final value)
    kept = estimate["trajectory"][:-1]
    assert resumed["trajectory"][: len(kept)] == kept
    assert resumed["trajectory"][-1][0] > estimate["trajectory"][-1][0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["noise_scale=true", "batch_size=64"], "needs two batch sizes"),
        (["noise_scale=maybe"], "noise_scale='maybe' is not allowed"),
        (["noise_scale=true", "trainer=fsdp"], "FSDP and DeepSpeed"),
    ],
)
def test_noise_scale_refusals_are_one_paragraph(tmp_path, overrides, message):
    done = run_cli(*QUICK, *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_accumulation_on_one_device_and_two_ddp_ranks_estimate_alike(tmp_path):
    """Micro batches of 32 in batches of 128: 4 accumulated on one process, or 2 on each of
    two DDP ranks (the per-rank gradients before the all-reduce). The data order differs, so
    the two agree in expectation, not bit for bit."""
    common = [*QUICK, "max_epochs=4", "noise_scale=true", "batch_size=128", "micro_batch_size=32"]
    found = {}
    for name, extra in {"one": [], "ddp": ["trainer=ddp_cpu", "threads=1"]}.items():
        done = run_cli(*common, *extra, f"hydra.run.dir={tmp_path / name}", timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        trained = json.loads((tmp_path / name / "metrics.json").read_text())["trained"]
        found[name] = trained["noise_scale"]
    assert found["ddp"]["steps_averaged"] == found["one"]["steps_averaged"]
    ratio = found["ddp"]["noise_scale"] / found["one"]["noise_scale"]
    assert 0.67 < ratio < 1.5, found


def test_tune_noise_scale_records_the_critical_batch_in_the_plan_and_trains_as_planned(tmp_path):
    run = tmp_path / "run"
    done = run_cli(*QUICK, "tune=noise_scale", "tune.noise_scale.steps=20", "batch_size=128",
                   f"hydra.run.dir={run}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((run / "metrics.json").read_text())
    plan = record["plan"]
    measured = plan["tuned"]["noise_scale"]
    assert plan["critical_batch_size"] == round(measured["noise_scale"]) > 0
    # one micro batch per step in the run: the measurement split it into quarters
    assert plan["micro_batch_size"] == 128 and measured["micro_batch_size"] == 32
    assert measured["steps"] == 20 and 0 < measured["steps_averaged"] <= 20
    assert "critical batch" in measured["reading"]
    assert record["trained"]["noise_scale"] is None  # the run itself did not estimate
    assert "tune=noise_scale: B_simple" in done.stderr + done.stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["tune=noise_scale", "tune.noise_scale.steps=1"], "tune.noise_scale.steps=1"),
        (["tune=noise_scale", "cv.folds=3"], "would tune each fold"),
    ],
)
def test_tune_noise_scale_refusals(tmp_path, overrides, message):
    done = run_cli(*QUICK, *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_step_with_a_short_micro_batch_is_not_counted_and_the_trajectory_thins_evenly():
    # 1020 samples in micro batches of 8: 128 per epoch (16 steps of 8), the last one of 4
    torch.manual_seed(0)
    x = torch.randn(1020, 4)
    y = x.sum(1) + torch.randn(1020)
    estimator = GradientNoiseScale(8, 64)
    trainer = L.Trainer(
        max_steps=48 * 10, accumulate_grad_batches=8, callbacks=[estimator], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=1,
    )  # fmt: skip
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    trainer.fit(Linear(), loader)
    summary = estimator.summary()
    assert summary["steps_averaged"] == 480 - 30  # one step of each of the 30 epochs skipped
    steps = [step for step, _ in summary["trajectory"]]
    assert len(steps) <= 200 and steps[-1] == 480
    gaps = {b - a for a, b in zip(steps[:-1], steps[1:], strict=True)}
    # evenly spread after thinning (twice the spacing where a point fell on a skipped step)
    assert max(gaps) <= 2 * min(gaps) and min(gaps) > 1, gaps


@pytest.mark.slow
def test_tune_noise_scale_with_a_schedule_free_optimizer(tmp_path):
    done = run_cli(*QUICK, "tune=noise_scale", "tune.noise_scale.steps=10",
                   "optimizer=adamw_schedulefree", "scheduler=none",
                   f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
