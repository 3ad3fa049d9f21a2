"""The report speaks the task's language (issue 12): metric names in words, the validation
panels a task logged (regression, binary, language model), the direction the records give,
and cross-validation jobs shown over all their folds, on synthetic sweep directories.

The numbers each plot draws are checked against hand-computed ones, not pixels.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest
import yaml

from trainlab.report import write_report
from trainlab.report.names import direction_for, label, titled
from trainlab.report.plots_curves import curve_panels, panel_metrics, panel_text, val_curves
from trainlab.report.progress import best_so_far, job_line
from trainlab.report.summary import summarize


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("train/loss", "training loss"),
        ("train/acc", "training accuracy"),
        ("val/loss", "validation loss"),
        ("val/acc", "validation accuracy"),
        ("val/f1", "validation F1"),
        ("val/acc_best", "best validation accuracy"),
        ("test/acc", "test accuracy"),
        ("test/loss", "test loss"),
        ("val/auroc", "validation AUROC"),
        ("val/auroc_best", "best validation AUROC"),
        ("val/mse", "validation mean squared error"),
        ("val/mae", "validation mean absolute error"),
        ("val/r2", "validation R²"),
        ("val/mse_best", "best validation mean squared error"),
        ("val/bpb", "validation bits per byte"),
        ("val/loss_best", "best validation loss"),
        ("val/unigram_bpb", "validation unigram bits per byte"),
        ("val/ppl", "validation perplexity"),
        ("val/perplexity", "validation perplexity"),
        ("cv/mean", "cross-validation mean"),
        ("fold2/val/acc_best", "best fold 2 validation accuracy"),
        ("val/my_thing", "validation my_thing"),  # unknown: the name itself
        ("objective", "objective"),
    ],
)
def test_every_metric_name_reads_as_words(name, words):
    assert label(name) == words


def test_titles_keep_acronyms_and_say_which_way_is_better():
    assert titled("val/auroc_best", "maximize") == "Best validation AUROC (higher is better)"
    assert (
        titled("val/mse_best", "minimize") == "Best validation mean squared error (lower is better)"
    )
    # the objective's own metric goes the records' way, even a name that says nothing
    assert direction_for("val/score", "val/score_best", "minimize") == "minimize"
    assert direction_for("val/r2", "val/mse_best", "minimize") == "maximize"  # R²: its own way
    assert direction_for("val/score", "val/mse_best", "minimize") is None  # unknown: no claim


def write_job(job: Path, record: dict, curves: dict[str, list[float]] | None, where="") -> None:
    """A job directory: overrides, metrics.json, and epochs.csv (in `where`: a fold dir)."""
    (job / ".hydra").mkdir(parents=True, exist_ok=True)
    overrides = [f"{k}={v}" for k, v in record["hparams"].items()]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "metrics.json").write_text(json.dumps(record))
    if curves is not None:
        (job / where).mkdir(parents=True, exist_ok=True)
        epochs = len(next(iter(curves.values())))
        table = {"epoch": list(range(epochs)), "step": [10 * (e + 1) for e in range(epochs)]}
        pd.DataFrame({**table, **curves}).to_csv(job / where / "epochs.csv", index=False)


def record_of(params: dict, objective: float, metric: str, direction: str, **extra) -> dict:
    return {
        "status": "completed",
        "objective": objective,
        "optimized_metric": metric,
        "direction": direction,
        "metrics": {metric: objective},
        "hparams": params,
        "duration_s": 1.0,
        "trained": {"epochs": 3, "optimizer_steps": 30},
        **extra,
    }


MSE = {0.001: 0.50, 0.01: 0.20, 0.1: 0.35}  # lr -> the best val/mse: lr=0.01 is the best


def regression_sweep(sweep: Path) -> None:
    for num, (lr, best) in enumerate(MSE.items()):
        curves = {
            "train/loss": [1.0, 0.6, 0.4],
            "val/loss": [1.0, 0.7, best],
            "val/mae": [0.9, 0.6, best / 2],
            "val/mse": [1.0, 0.7, best],
            "val/mse_best": [1.0, 0.7, best],
            "val/r2": [0.0, 0.3, 1 - best],
        }
        write_job(sweep / str(num), record_of({"lr": lr}, best, "val/mse_best", "minimize"), curves)


def test_a_regression_sweep_gets_its_own_panels_and_the_lowest_error_wins(tmp_path):
    regression_sweep(tmp_path)
    df = summarize(tmp_path)
    assert list(df["lr"]) == [0.01, 0.1, 0.001]  # minimized: the lowest mse first
    assert df["best"].iloc[0] == "★"
    done = df[df["status"] == "completed"]
    curves = val_curves(done, tmp_path, [])
    assert [c.name for c in curves] == ["job 1: lr=0.01", "job 2: lr=0.1", "job 0: lr=0.001"]
    panels = curve_panels(curves, "val/mse_best")
    assert panels == ["val/loss", "val/mse", "val/mae", "val/r2"]  # no train/, no *_best
    assert [p.mean for p in curves[0].bands["val/mae"]] == pytest.approx([0.9, 0.6, 0.1])
    title, ylabel = panel_text("val/mse", "val/mse_best", "minimize", 3)
    assert title.startswith("Validation mean squared error per epoch")
    assert "lower is better" in title and "lower is better" in ylabel
    title, _ = panel_text("val/r2", "val/mse_best", "minimize", 3)
    assert title.startswith("Validation R² per epoch") and "higher is better" in title

    text = write_report(tmp_path).read_text()
    assert "val/mse_best (best validation mean squared error), minimized: lower is better" in text
    assert "**`lr=0.01`**: val/mse_best 0.2" in text  # the recommendation: the lowest error
    configs = (tmp_path / "configs.md").read_text()
    assert configs.startswith("# Configurations: val/mse_best (best validation mean squared")
    assert "lower is better" in configs
    assert best_so_far(tmp_path) == ("1", 0.2, "val/mse_best")
    assert (tmp_path / "val_curves.png").is_file()


def test_a_binary_and_a_language_model_sweep_get_their_panels(tmp_path):
    binary = ["val/loss", "val/acc", "val/f1", "val/auroc", "val/auroc_best", "train/loss"]
    assert panel_metrics(["epoch", "step", *binary], "val/auroc_best") == [
        "val/loss",
        "val/auroc",
        "val/acc",
        "val/f1",
    ]
    lm = ["val/loss", "val/bpb", "val/loss_best", "val/unigram_bpb", "val/unigram_loss"]
    assert panel_metrics(lm, "val/loss_best") == ["val/loss", "val/bpb"]  # baselines left out
    many = ["val/a", "val/b", "val/c", "val/d", "val/loss"]
    assert panel_metrics(many, "val/d_best") == ["val/loss", "val/d", "val/a", "val/b"]  # capped

    for num, (lr, auroc) in enumerate(((0.01, 0.91), (0.1, 0.83))):
        curves = {
            "val/loss": [0.7, 0.5],
            "val/acc": [0.6, 0.8],
            "val/f1": [0.5, 0.75],
            "val/auroc": [0.7, auroc],
            "val/auroc_best": [0.7, auroc],
        }
        record = record_of({"lr": lr}, auroc, "val/auroc_best", "maximize")
        write_job(tmp_path / str(num), record, curves, where="csv")
        (tmp_path / str(num) / "csv" / "epochs.csv").rename(
            tmp_path / str(num) / "csv" / "metrics.csv"
        )  # the CSV logger's file
    df = summarize(tmp_path)
    curves = val_curves(df, tmp_path, [])
    assert curve_panels(curves, "val/auroc_best") == ["val/loss", "val/auroc", "val/acc", "val/f1"]
    assert curves[0].name == "job 0: lr=0.01"
    title, _ = panel_text("val/auroc", "val/auroc_best", "maximize", 2)
    assert title.startswith("Validation AUROC per epoch") and "higher is better" in title
    assert (
        "(best validation AUROC), maximized: higher is better" in write_report(tmp_path).read_text()
    )


# per fold k of a 3-fold job: val/acc per epoch; fold 2 stopped early, after 2 epochs
FOLDS = {
    0.01: [[0.5, 0.7, 0.8], [0.4, 0.6, 0.9], [0.6, 0.8]],
    0.1: [[0.3, 0.4, 0.5], [0.2, 0.5, 0.6], [0.4, 0.5]],
}


def cv_job(job: Path, params: dict, folds: list[list[float]], offset: float = 0.0) -> list:
    """A 3-fold cross-validation job as run.py's cross_validate leaves it."""
    values = [max(acc) + offset for acc in folds]
    trained = [{"epochs": len(acc), "optimizer_steps": 10 * len(acc)} for acc in folds]
    metrics = {f"fold{k}/val/acc_best": v for k, v in enumerate(values)}
    metrics.update({"cv/mean": statistics.fmean(values), "cv/std": statistics.pstdev(values)})
    cv = {"folds": len(folds), "metric": "val/acc_best", "values": values}
    cv.update(mean=metrics["cv/mean"], std=metrics["cv/std"])
    record = record_of(params, metrics["cv/mean"], "val/acc_best", "maximize")
    record.update(metrics=metrics, trained={"plan": {}, "folds": trained, "cv": cv})
    for k, acc in enumerate(folds):
        curves = {"val/loss": [1 - a + offset for a in acc], "val/acc": [a + offset for a in acc]}
        write_job(job, record, curves, where=f"fold_{k}")
    return values


def test_cross_validation_curves_are_the_mean_over_the_folds(tmp_path):
    values = {
        lr: cv_job(tmp_path / str(n), {"lr": lr}, f) for n, (lr, f) in enumerate(FOLDS.items())
    }
    (tmp_path / "2" / ".hydra").mkdir(parents=True)  # started, no record yet: no folds
    (tmp_path / "2" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["lr=1.0"]))
    df = summarize(tmp_path)
    best = df.iloc[0]
    assert best["lr"] == 0.01 and best["objective"] == pytest.approx(statistics.fmean(values[0.01]))
    # epochs and steps: the mean per fold over all 3 folds (3, 3, 2)
    assert best["epochs"] == pytest.approx(8 / 3, abs=0.01)
    assert best["steps"] == pytest.approx(80 / 3, abs=0.01)
    assert best["cv_folds"] == 3
    assert best["cv_std"] == pytest.approx(statistics.pstdev(values[0.01]))

    curves = val_curves(df, tmp_path, [])
    assert [c.name for c in curves] == [
        "job 0: lr=0.01 (mean of 3 folds)",
        "job 1: lr=0.1 (mean of 3 folds)",
    ]
    top = curves[0]
    assert (top.n, top.spread) == (3, "3 folds")
    acc = [tuple(p) for p in top.bands["val/acc"]]
    want = [  # (epoch, mean, min, max, folds that reached it)
        (0, (0.5 + 0.4 + 0.6) / 3, 0.4, 0.6, 3),
        (1, (0.7 + 0.6 + 0.8) / 3, 0.6, 0.8, 3),
        (2, (0.8 + 0.9) / 2, 0.8, 0.9, 2),  # fold 2 stopped after 2 epochs
    ]
    for got, expected in zip(acc, want, strict=True):
        assert got == pytest.approx(expected)
    loss = [p.mean for p in curves[1].bands["val/loss"]]
    assert loss == pytest.approx([(0.7 + 0.8 + 0.6) / 3, (0.6 + 0.5 + 0.5) / 3, (0.5 + 0.4) / 2])

    text = write_report(tmp_path).read_text()
    assert (
        "- cross-validation: a job's objective is the mean of its val/acc_best over its 3 folds"
        in text
    )
    assert "objective (cross-validation: mean of 3 folds)" in text
    assert "each repeat's value is its mean over 3 folds" in (tmp_path / "configs.md").read_text()
    assert "val/acc_best (mean of 3 folds) 0.8333, mean of 1 repeat" in text
    table = pd.read_csv(tmp_path / "summary.csv", dtype=str)
    assert list(table["cv_folds"].fillna("")) == ["3", "3", ""]  # whole numbers, not 3.0
    assert list(table["steps"].fillna("")) == ["26.67", "26.67", ""]
    line = job_line(tmp_path, tmp_path / "0", ["lr=0.01"])
    assert f"val/acc_best {statistics.fmean(values[0.01]):.4g} (mean of 3 folds)" in line


def test_cross_validation_with_seeds_averages_every_fold_of_every_seed(tmp_path):
    folds = FOLDS[0.01]
    for seed in (0, 1):
        cv_job(tmp_path / str(seed), {"lr": 0.01, "seed": seed}, folds, offset=seed / 10)
    curves = val_curves(summarize(tmp_path), tmp_path, [])
    (curve,) = curves
    assert (curve.n, curve.spread) == (6, "2 seeds x 3 folds")
    assert curve.name == "all jobs (mean of 2 seeds x 3 folds)"
    first = curve.bands["val/acc"][0]
    six = [0.5, 0.4, 0.6, 0.6, 0.5, 0.7]  # epoch 0 of the 3 folds of seed 0, then seed 1
    assert tuple(first) == pytest.approx((0, sum(six) / 6, 0.4, 0.7, 6))
    assert math.isclose(curve.bands["val/acc"][2].n, 4)  # both seeds' fold 2 stopped early
