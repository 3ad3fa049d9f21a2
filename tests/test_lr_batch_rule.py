"""The lr-batch rule fitted from a sweep's job table (issue 15, requirement 6): a known exponent
is recovered inside its interval, and a sweep that cannot show it gives None."""

from __future__ import annotations

import math

import numpy as np
import pandas
import pytest

from trainlab.report.lr_batch_rule import best_lr, lr_batch_rule

SIZES = (16, 64, 256, 1024)
LRS = tuple(10.0 ** np.arange(-4.0, -1.0 + 1e-9, 0.5))  # 1e-4 .. 1e-1, 7 lrs
C = 1e-4  # lr* = C x batch ** ALPHA: 4e-4 at 16 .. 3.2e-3 at 1024
ALPHA = 0.5


def sweep(alpha=ALPHA, seeds=(1, 2, 3), sizes=SIZES, lrs=LRS, noise=0.02, sign=1.0, rng=0):
    """objective = -(log10 lr - log10 lr*)^2 + noise, one row per (lr, batch_size, seed)."""
    gen = np.random.default_rng(rng)
    rows = []
    for b in sizes:
        peak = math.log10(C * b**alpha)
        for lr in lrs:
            for seed in seeds:
                value = -((math.log10(lr) - peak) ** 2) + gen.normal(0, noise)
                rows.append(
                    dict(lr=lr, batch_size=b, seed=seed, objective=sign * value, status="completed")
                )
    return pandas.DataFrame(rows)


def test_a_known_exponent_is_recovered_inside_a_sensible_interval():
    rule = lr_batch_rule(sweep(), "maximize")
    low, high = rule["alpha_ci"]
    assert low < ALPHA < high and low < rule["alpha"] < high
    assert 0 < high - low < 0.3  # 3 seeds of small noise: narrow, but not a point
    assert rule["alpha"] == pytest.approx(ALPHA, abs=0.1)
    assert rule["c"] == pytest.approx(C, rel=0.5)
    assert rule["points"] == 4 and rule["repeats"] == {"min": 3, "max": 3}
    assert set(rule["best_lr"]) == set(SIZES) and not rule["flagged"]
    assert rule["best_lr"][256] == pytest.approx(C * 16, rel=0.2)
    assert rule["compared"]["sqrt"]["inside"] and not rule["compared"]["linear"]["inside"]
    assert "bootstrap" in rule["method"]
    assert rule["use"].startswith("lr_scaling=power lr_scaling_exponent=0.")
    assert "base_batch_size=64 lr=" in rule["use"] or "base_batch_size=256 lr=" in rule["use"]


def test_the_same_sweep_gives_the_same_interval():
    assert lr_batch_rule(sweep(), "maximize") == lr_batch_rule(sweep(), "maximize")


def test_linear_scaling_is_recognised_and_minimize_is_honoured():
    wide = tuple(10.0 ** np.arange(-4, 0.01, 0.5))  # lr* up to 1e-1 at batch 1024
    rule = lr_batch_rule(sweep(alpha=1.0, sign=-1.0, lrs=wide), "minimize")
    assert rule["compared"]["linear"]["inside"] and not rule["compared"]["sqrt"]["inside"]
    # the same table read the wrong way round finds no peak inside: every size is flagged
    wrong = lr_batch_rule(sweep(alpha=1.0, sign=-1.0, lrs=wide), "maximize")
    assert wrong is not None and len(wrong["flagged"]) == 4


def test_none_when_the_sweep_does_not_cover_three_batch_sizes_with_three_lrs():
    assert lr_batch_rule(sweep(sizes=(16, 64)), "maximize") is None
    assert lr_batch_rule(sweep(lrs=LRS[:2]), "maximize") is None
    jobs = sweep()
    jobs.loc[jobs["batch_size"].isin([16, 64]), "status"] = "failed"  # only completed rows count
    assert lr_batch_rule(jobs, "maximize") is None
    assert lr_batch_rule(jobs.drop(columns="objective"), "maximize") is None


def test_failed_rows_are_left_out_of_the_fit():
    jobs = sweep()
    junk = jobs.iloc[:6].assign(objective=100.0, status="failed")
    assert lr_batch_rule(pandas.concat([jobs, junk]), "maximize") == lr_batch_rule(jobs, "maximize")


def test_one_seed_gives_the_least_squares_interval_and_says_so():
    jobs = sweep(seeds=(1,)).drop(columns="seed")
    rule = lr_batch_rule(jobs, "maximize")
    low, high = rule["alpha_ci"]
    assert low < rule["alpha"] < high and low < ALPHA < high
    assert "one repeat per cell" in rule["method"] and "standard error" in rule["method"]
    assert rule["repeats"] == {"min": 1, "max": 1}


def test_a_best_lr_at_the_edge_of_the_swept_range_is_flagged_and_kept():
    # at batch 1024 the best lr (3.2e-3) lies above the largest swept lr (10**-2.5)
    rule = lr_batch_rule(sweep(lrs=LRS[:4]), "maximize")
    assert rule["flagged"] == {1024: "best at the edge of the swept lrs"}
    assert rule["best_lr"][1024] == pytest.approx(LRS[3])
    assert rule["points"] == 4
    assert "base_batch_size=1024" not in rule["use"]  # stated at an unflagged batch size


def test_best_lr_takes_the_vertex_only_for_a_peak_of_the_right_kind():
    lrs = np.array([1e-3, 1e-2, 1e-1])
    lr, flag = best_lr(lrs, np.array([0.0, 1.0, 0.5]), "maximize")
    assert flag is None and 1e-3 < lr < 1e-1 and lr != pytest.approx(1e-2)
    assert best_lr(lrs, np.array([0.0, 0.5, 1.0]), "maximize") == (
        1e-1,
        "best at the edge of the swept lrs",
    )
    lr, flag = best_lr(lrs, np.array([0.0, 1.0, 0.5]), "minimize")
    assert (lr, flag) == (1e-3, "best at the edge of the swept lrs")
    # a best in the middle of a run that curves upward: no maximum to take
    lrs = np.geomspace(1e-4, 1e-1, 5)
    lr, flag = best_lr(lrs, np.array([1.0, 0.0, 1.1, 0.0, 1.0]), "maximize")
    assert flag == "no peak of the objective around the best lr" and lr == pytest.approx(lrs[2])


def test_the_plot_is_written(tmp_path):
    rule = lr_batch_rule(sweep(), "maximize", sweep_dir=tmp_path)
    png = tmp_path / "lr_batch_rule.png"
    assert rule["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    rule = lr_batch_rule(sweep(seeds=(1,)), "maximize", sweep_dir=tmp_path / "..")
    assert (tmp_path.parent / "lr_batch_rule.png").stat().st_size > 5000


def test_an_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="direction"):
        lr_batch_rule(sweep(), "up")
