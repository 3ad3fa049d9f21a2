"""Sweeps as a user runs them: grid, failure tolerance, Optuna and its resumption, k-fold CV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import compose_run, run_cli
from quick import QUICK
from trainlab.data.digits import DigitsDataModule
from trainlab.run import train
from trainlab.search.storage import load_sweep_study

FAST = [*QUICK, "logger=csv"]


def jobs_of(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_grid_sweep_gives_one_directory_and_verdict_per_job_and_a_report(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "optimizer=sgd_momentum,adam", "lr=0.01,0.1", *FAST, f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = jobs_of(sweep)
    assert sorted(jobs) == ["0", "1", "2", "3"]
    assert {(j["hparams"]["optimizer"], j["hparams"]["lr"]) for j in jobs.values()} == {
        ("sgd_momentum", 0.01),
        ("sgd_momentum", 0.1),
        ("adam", 0.01),
        ("adam", 0.1),
    }
    assert all(j["status"] == "completed" for j in jobs.values())
    # the report was written by the Hydra callback at the end of the multirun
    for name in ("summary.csv", "summary.md", "objective_vs_lr.png", "val_curves.png"):
        assert (sweep / name).exists(), name


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_diverging_and_failing_jobs_do_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "optimizer=sgd",
        "lr=0.05,1e6",
        "batch_size=64,5000",
        *FAST,
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "diverged at step" in output and "with lr=1e+06" in output
    jobs = jobs_of(sweep)
    by_point = {(j["hparams"]["lr"], j["hparams"]["batch_size"]): j for j in jobs.values()}
    assert by_point[(0.05, 64)]["status"] == "completed"
    diverged = by_point[(1e6, 64)]
    assert diverged["status"] == "diverged" and diverged["objective"] == -1e9
    assert "diverged at step" in diverged["error"]
    for point in [(0.05, 5000), (1e6, 5000)]:
        assert by_point[point]["status"] == "failed"
        assert "batch_size=5000 is larger than the training split" in by_point[point]["error"]

    import pandas as pd

    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary["status"]) == ["completed", "diverged", "failed", "failed"]
    assert summary["best"].iloc[0] == "★"
    assert "did not complete" in (sweep / "summary.md").read_text()


@pytest.mark.slow  # over 10 s: the default suite stays under ~10 minutes
def test_optuna_study_lives_in_the_sweep_dir_and_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hparams_search=optuna", *QUICK, "logger=none", f"hydra.sweep.dir={sweep}"]
    first = run_cli(*args, "hydra.sweeper.n_trials=3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (sweep / "optuna.journal").exists()
    assert sorted(jobs_of(sweep)) == ["0", "1", "2"]
    first_points = {
        (j["hparams"]["optimizer"], j["hparams"]["lr"]) for j in jobs_of(sweep).values()
    }

    again = run_cli(*args, "hydra.sweeper.n_trials=5")  # the study's total: 2 more
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 of 5 trials so far" in again.stdout + again.stderr
    jobs = jobs_of(sweep)
    assert sorted(jobs) == ["0", "1", "2", "3", "4"]  # new job dirs, the old ones untouched
    new_points = {(jobs[n]["hparams"]["optimizer"], jobs[n]["hparams"]["lr"]) for n in ("3", "4")}
    assert not new_points & first_points  # not a replay of the seeded start

    import optuna

    study = load_sweep_study(sweep)
    assert len(study.trials) == 5
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(t.state in finished for t in study.trials)
    assert {"lr", "optimizer", "batch_size"} == set(study.trials[0].params)


def test_diverged_optuna_trial_is_a_failed_trial_not_a_fake_value(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        *QUICK,
        "logger=none",
        "lr=1e6",
        "optimizer=sgd",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import optuna

    (trial,) = load_sweep_study(sweep).trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.value is None
    assert trial.user_attrs["trainlab_status"] == "diverged"
    assert jobs_of(sweep)["0"]["objective"] == -1e9  # what the job returns to other sweepers


@pytest.mark.slow  # over 10 s: the default suite stays under ~10 minutes
def test_joblib_launcher_runs_jobs_in_parallel_without_collisions(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "lr=0.01,0.1",
        *FAST,
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = jobs_of(sweep)
    assert {j["hparams"]["lr"] for j in jobs.values()} == {0.01, 0.1}
    for name in jobs:
        assert (sweep / name / "train.log").exists()
        assert (sweep / name / "csv" / "metrics.csv").exists()


def test_slurm_launcher_config_composes(tmp_path):
    cfg = compose_run(["hydra/launcher=slurm"], tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 1 and launcher.timeout_min > 0


def test_folds_partition_train_and_val_and_never_touch_test():
    plain = DigitsDataModule(seed=3).split_indices()
    pool = set(plain["train"]) | set(plain["val"])
    seen_in_val: list[int] = []
    for k in range(3):
        split = DigitsDataModule(seed=3, folds=3, fold=k).split_indices()
        assert set(split["test"]) == set(plain["test"])
        assert set(split["train"]) | set(split["val"]) == pool
        assert not set(split["train"]) & set(split["val"])
        seen_in_val += list(split["val"])
    assert sorted(seen_in_val) == sorted(pool)  # every sample validates exactly once


def test_three_fold_cross_validation_in_one_run(tmp_path):
    cfg = compose_run([*QUICK, "logger=none", "callbacks=checkpoint", "cv.folds=3"], tmp_path)
    objective = train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    metrics = record["metrics"]
    folds = [metrics[f"fold{k}/val/acc_best"] for k in range(3)]
    assert record["status"] == "completed"
    assert objective == pytest.approx(sum(folds) / 3) == pytest.approx(metrics["cv/mean"])
    assert metrics["cv/std"] == pytest.approx(__import__("statistics").stdev(folds))
    assert record["trained"]["cv"]["values"] == pytest.approx(folds)
    assert not any(name.startswith("test/") or "/test/" in name for name in metrics)
    assert sorted(p.name for p in tmp_path.glob("fold_*")) == ["fold_0", "fold_1", "fold_2"]


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_cross_validation_inside_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "cv.folds=2", "lr=0.01,0.1", *QUICK, "logger=none", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = jobs_of(sweep)
    assert all(j["objective"] == pytest.approx(j["metrics"]["cv/mean"]) for j in jobs.values())
    import pandas as pd

    assert pd.read_csv(sweep / "summary.csv")["cv_mean"].notna().all()


def test_cross_validation_needs_a_datamodule_with_folds(tmp_path):
    from trainlab.checks import ConfigError

    cfg = compose_run(["experiment=gpt_small", "cv.folds=2"], tmp_path)
    with pytest.raises(ConfigError, match="cv.folds=2 needs a datamodule that can cut folds"):
        train(cfg)
