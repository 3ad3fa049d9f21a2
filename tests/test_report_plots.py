"""The report's plots with uncertainty (issue 15), on a synthetic sweep of 3 seeds per
configuration: the numbers each plot draws (means, 95% intervals, ties with the best, bands
over the seeds) checked against hand-computed ones, and the PNGs written.

The sweep: optimizer sgd/adam x lr 0.001/0.1 x batch size 32/64, seeds 0, 1, 2; adam at
lr=0.001, batch 64 diverged with seed 2, and sgd at lr=0.1, batch 32 has a 4th, pruned seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import yaml

from trainlab.report import write_report
from trainlab.report.plots_curves import val_curves
from trainlab.report.plots_data import config_of, heatmap_cells, lr_curves, lr_marks
from trainlab.report.summary import summarize

DIVERGED = None
# (optimizer, lr, batch size) -> objective per seed 0, 1, 2
VALUES = {
    ("adam", 0.1, 32): [0.90, 0.92, 0.94],  # the best: mean 0.92
    ("adam", 0.1, 64): [0.91, 0.90, 0.92],  # mean 0.91, tied with the best (paired p = 0.42)
    ("adam", 0.001, 32): [0.50, 0.51, 0.52],
    ("adam", 0.001, 64): [0.60, 0.62, DIVERGED],  # mean 0.61 of 2
    ("sgd", 0.1, 32): [0.80, 0.85, 0.90],
    ("sgd", 0.1, 64): [0.70, 0.75, 0.80],
    ("sgd", 0.001, 32): [0.70, 0.71, 0.72],  # beats adam in its cell, not tied with the best
    ("sgd", 0.001, 64): [0.40, 0.41, 0.42],
}
T2 = 4.302653  # scipy.stats.t.ppf(0.975, 2): the 95% interval of 3 values
T1 = 12.706205  # ... of 2 values


def write_job(sweep: Path, num: int, params: dict, status: str, objective=None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"{k}={v}" for k, v in params.items()])
    )
    record = {
        "status": status,
        "objective": objective if status == "completed" else -1e9,
        "optimized_metric": "val/acc_best",
        "direction": "maximize",
        "metrics": {"val/acc_best": objective} if status == "completed" else {},
        "hparams": params,
        "duration_s": 1.0,
        "trained": {"epochs": 3},
    }
    if status == "pruned":
        record["pruned"] = {"metric": "val/acc", "epoch": 1, "value": 0.4}
    elif status != "completed":
        record["error"] = f"{status} on purpose"
    (job / "metrics.json").write_text(json.dumps(record))
    if status == "completed":
        seed = params["seed"]
        (job / "csv").mkdir()
        pd.DataFrame(  # a train row between the validation rows, as Lightning logs them
            {
                "epoch": [0, 0, 1, 2],
                "train/loss": [2.0, math.nan, math.nan, math.nan],
                "val/loss": [math.nan, 1.0, 0.6, 0.4 + seed / 100],
                "val/acc": [math.nan, 0.3, 0.5 + seed / 100, objective],
            }
        ).to_csv(job / "csv" / "metrics.csv", index=False)


def make_sweep(sweep: Path) -> None:
    num = 0
    for (optimizer, lr, batch_size), values in VALUES.items():
        for seed, value in enumerate(values):
            params = {"optimizer": optimizer, "lr": lr, "batch_size": batch_size, "seed": seed}
            write_job(sweep, num, params, "diverged" if value is None else "completed", value)
            num += 1
    params = {"optimizer": "sgd", "lr": 0.1, "batch_size": 32, "seed": 3}
    write_job(sweep, num, params, "pruned")


def ci(mean: float, std: float, n: int) -> tuple[float, float]:
    half = {3: T2, 2: T1}[n] * std / math.sqrt(n)
    return mean - half, mean + half


def test_repeats_are_the_overrides_but_the_seed():
    assert config_of("seed=1 lr=0.1 optimizer=adam") == config_of("optimizer=adam lr=0.1 seed=7")
    assert config_of("lr=0.1 seed=1") != config_of("lr=0.01 seed=1")


def test_lr_curves_mean_and_interval_per_optimizer_and_batch_size(tmp_path):
    make_sweep(tmp_path)
    curves = lr_curves(summarize(tmp_path))
    assert set(curves) == {
        f"optimizer={o}, batch_size={b}" for o in ("adam", "sgd") for b in (32, 64)
    }
    # mean 0.51, std 0.01; mean 0.92, std 0.02
    want = [(0.001, 0.51, *ci(0.51, 0.01, 3), 3), (0.1, 0.92, *ci(0.92, 0.02, 3), 3)]
    for got, expected in zip(curves["optimizer=adam, batch_size=32"], want, strict=True):
        assert tuple(got) == pytest.approx(expected, abs=1e-6)
    # the diverged seed is left out: the mean and interval of the 2 that completed
    low = curves["optimizer=adam, batch_size=64"][0]
    assert tuple(low) == pytest.approx((0.001, 0.61, *ci(0.61, math.sqrt(2e-4), 2), 2), abs=1e-6)
    # ... and marked on its own, as is the pruned seed
    assert lr_marks(summarize(tmp_path)) == {"diverged or failed": [0.001], "pruned": [0.1]}


def test_lr_curves_without_repeats_have_no_band(tmp_path):
    for num, lr in enumerate((0.001, 0.01, 0.1)):
        write_job(tmp_path, num, {"lr": lr, "seed": 0}, "completed", 0.5 + lr)
    (points,) = lr_curves(summarize(tmp_path)).values()
    assert [(p.lr, p.mean, p.n) for p in points] == [
        (0.001, 0.501, 1),
        (0.01, 0.51, 1),
        (0.1, 0.6, 1),
    ]
    assert all(math.isnan(p.low) and math.isnan(p.high) for p in points)


def test_heatmap_cells_mean_n_and_ties_with_the_best(tmp_path):
    make_sweep(tmp_path)
    cells = heatmap_cells(summarize(tmp_path))
    assert set(cells) == {(lr, b) for lr in (0.001, 0.1) for b in (32, 64)}
    best = cells[(0.1, 32)]  # adam, mean 0.92
    assert (best.n, best.tied, best.best, best.bad) == (3, True, True, 0)
    assert best.mean == pytest.approx(0.92)
    # adam, mean 0.91: paired by seed, the differences -0.01, 0.02, 0.02 give t = 1, p = 0.42
    tied = cells[(0.1, 64)]
    assert (tied.n, tied.tied, tied.best) == (3, True, False)
    assert tied.mean == pytest.approx(0.91)
    # sgd (0.71) beats adam (0.51) in this cell; 0.20 to 0.22 below the best: not tied
    beaten = cells[(0.001, 32)]
    assert (beaten.n, beaten.tied) == (3, False) and beaten.mean == pytest.approx(0.71)
    # adam's 2 completed seeds (the diverged one counted apart), Welch's t-test: not tied
    short = cells[(0.001, 64)]
    assert (short.n, short.tied, short.bad) == (2, False, 1)
    assert short.mean == pytest.approx(0.61)


def test_val_curves_of_the_best_configuration_over_its_seeds(tmp_path):
    make_sweep(tmp_path)
    df = summarize(tmp_path)
    unreadable: list = []
    curves = val_curves(df[df["status"] == "completed"], tmp_path, unreadable)
    assert unreadable == []
    assert [c.name for c in curves] == [
        "optimizer=adam lr=0.1 batch_size=32 (mean of 3 seeds)",
        "optimizer=adam lr=0.1 batch_size=64 (mean of 3 seeds)",
        "optimizer=sgd lr=0.1 batch_size=32 (mean of 3 seeds)",
    ]
    best = curves[0]
    assert best.n == 3
    acc = [tuple(p) for p in best.bands["val/acc"]]
    want = [(0, 0.3, 0.3, 0.3, 3), (1, 0.51, 0.50, 0.52, 3), (2, 0.92, 0.90, 0.94, 3)]
    for got, expected in zip(acc, want, strict=True):
        assert got == pytest.approx(expected)
    assert [tuple(p)[1:4] for p in best.bands["val/loss"]][2] == pytest.approx((0.41, 0.4, 0.42))


def test_report_writes_the_plots_with_repeats(tmp_path):
    make_sweep(tmp_path)
    text = write_report(tmp_path).read_text()
    for png in ("objective_vs_lr.png", "heatmap_lr_batch_size.png", "val_curves.png"):
        assert f"({png})" in text
        data = (tmp_path / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        image = matplotlib.image.imread(tmp_path / png)
        assert image.shape[0] > 300 and image.shape[1] > 300


def test_val_curves_read_epochs_csv_when_there_is_no_csv_logger(tmp_path):
    from trainlab.report.plots_curves import read_metrics

    (tmp_path / "epochs.csv").write_text("epoch,step,val/acc,val/loss\n0,5,0.5,1.2\n1,10,0.7,0.9\n")
    logged = read_metrics(tmp_path, [])
    assert list(logged["val/acc"]) == [0.5, 0.7]
