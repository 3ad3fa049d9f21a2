"""Repeats grouped into configurations (issue 15): mean ± Student-t interval per configuration,
ties with the best named, the recommendation and its command, the lr-edge suggestion,
report.json, and the console ranking, on synthetic sweep directories."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from trainlab.report import write_report
from trainlab.report.progress import ranking_lines
from trainlab.search.plan import SweepPlan


def job(sweep: Path, num: int, overrides: list[str], status: str | None, objective=None, **extra):
    """A job directory as a run leaves it; status None: started, no record yet."""
    path = sweep / str(num)
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status is None:
        return
    done = status == "completed"
    given = {k.lstrip("+"): yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)}
    record = {
        "status": status,
        "objective": objective if done else -1e9,
        "optimized_metric": "val/acc_best",
        "direction": "maximize",
        "metrics": {"val/acc_best": objective, "test/acc": objective - 0.01} if done else {},
        "hparams": {"optimizer": "adam", "lr": 0.001, "batch_size": 64, **given},
        "duration_s": 1.0,
        "trained": {"epochs": 2},
    }
    if not done:
        record["error"] = f"{status} on purpose"
    (path / "metrics.json").write_text(json.dumps({**record, **extra}))


def sweep_of(sweep: Path, results: dict[str, list], seeds=(1, 2, 3)) -> None:
    """One job per (configuration, seed); a result is an objective or a status."""
    num = 0
    for overrides, values in results.items():
        for seed, value in zip(seeds, values, strict=True):
            status = value if isinstance(value, str) else "completed"
            objective = None if isinstance(value, str) else value
            job(sweep, num, [*overrides.split(), f"seed={seed}"], status, objective)
            num += 1


def configs(sweep: Path) -> pd.DataFrame:
    return pd.read_csv(sweep / "configs.csv").set_index("configuration")


def report_json(sweep: Path) -> dict:
    return json.loads((sweep / "report.json").read_text())


def test_seeds_collapse_other_knobs_do_not(tmp_path):
    sweep_of(
        tmp_path,
        {
            "lr=0.01 batch_size=32": [0.80, 0.82, 0.84],
            "lr=0.01 batch_size=128": [0.70, 0.71, 0.72],
            "lr=0.1 batch_size=32": [0.60, 0.61, 0.62],
        },
    )
    write_report(tmp_path)
    table = configs(tmp_path)
    assert list(table.index) == [
        "lr=0.01 batch_size=32",
        "lr=0.01 batch_size=128",
        "lr=0.1 batch_size=32",
    ]
    assert list(table["n"]) == [3, 3, 3]
    assert table.loc["lr=0.01 batch_size=32", "jobs"] == "0 1 2"
    assert set(table["lr"]) == {0.01, 0.1} and set(table["batch_size"]) == {32, 128}
    assert "seed" not in table


def test_interval_numbers_match_scipy(tmp_path):
    values = [0.80, 0.82, 0.87]
    sweep_of(tmp_path, {"lr=0.01": values, "lr=0.1": [0.5, 0.6, 0.55]})
    write_report(tmp_path)
    row = configs(tmp_path).loc["lr=0.01"]
    mean, std = sum(values) / 3, pd.Series(values).std()
    half = stats.t.ppf(0.975, 2) * std / math.sqrt(3)
    assert row["mean"] == pytest.approx(mean)
    assert row["std"] == pytest.approx(std)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half))
    assert (row["min"], row["max"]) == (0.80, 0.87)
    assert row["test/acc mean"] == pytest.approx(mean - 0.01)
    assert row["test/acc ci_high"] == pytest.approx(mean - 0.01 + half)
    assert "0.83 [" in (tmp_path / "configs.md").read_text()


def test_close_noisy_config_tied_clearly_worse_not_paired_by_seed(tmp_path):
    best, close, worse = [0.90, 0.95, 0.85], [0.88, 0.96, 0.83], [0.50, 0.52, 0.51]
    sweep_of(tmp_path, {"lr=0.01": best, "lr=0.003": close, "lr=0.1": worse})
    write_report(tmp_path)
    table = configs(tmp_path)
    assert table.loc["lr=0.01", "mark"] == "best"
    assert table.loc["lr=0.003", "mark"] == "tied"
    assert table.loc["lr=0.1", "mark"] == "worse"
    assert set(table["p_test"].dropna()) == {"paired"}  # same seeds: paired by seed value
    p = stats.ttest_rel(best, close).pvalue
    assert table.loc["lr=0.003", "p_vs_best"] == pytest.approx(p)
    assert report_json(tmp_path)["recommended"]["tied"] == ["lr=0.003"]


def test_paired_by_seed_value_not_job_order_welch_when_seeds_differ(tmp_path):
    job(tmp_path, 0, ["lr=0.01", "seed=1"], "completed", 0.90)
    job(tmp_path, 1, ["lr=0.01", "seed=2"], "completed", 0.80)
    job(tmp_path, 2, ["lr=0.01", "seed=3"], "completed", 0.85)
    job(tmp_path, 3, ["lr=0.003", "seed=3"], "completed", 0.84)  # the other order
    job(tmp_path, 4, ["lr=0.003", "seed=1"], "completed", 0.89)
    job(tmp_path, 5, ["lr=0.003", "seed=2"], "completed", 0.79)
    for num, (seed, value) in enumerate([(7, 0.70), (8, 0.72), (9, 0.75)], start=6):
        job(tmp_path, num, ["lr=0.1", f"seed={seed}"], "completed", value)
    write_report(tmp_path)
    table = configs(tmp_path)
    paired = table.loc["lr=0.003"]
    assert paired["p_test"] == "paired"
    # seed by seed the difference is always 0.01: a paired test sees it for sure
    assert paired["p_vs_best"] < 1e-6 and paired["mark"] == "worse"
    welch = table.loc["lr=0.1"]
    assert welch["p_test"] == "welch"
    want = stats.ttest_ind([0.90, 0.80, 0.85], [0.70, 0.72, 0.75], equal_var=False).pvalue
    assert welch["p_vs_best"] == pytest.approx(want)


def test_one_seed_everywhere_says_nothing_can_be_concluded(tmp_path):
    sweep_of(tmp_path, {"lr=0.01": [0.9], "lr=0.1": [0.8]}, seeds=(1,))
    text = write_report(tmp_path).read_text()
    assert "nothing can be concluded" in text and "was not measured" in text
    assert "seed=1,2,3" in text
    table = configs(tmp_path)
    assert table["mark"].fillna("").tolist() == ["best", ""]  # no test without repeats
    assert table["ci_low"].isna().all()
    assert "nothing can be concluded" in (tmp_path / "configs.md").read_text()


def test_single_repeats_beside_repeated_ones_get_the_measured_spread(tmp_path):
    sweep_of(tmp_path, {"lr=0.01": [0.90, 0.92, 0.94], "lr=0.03": [0.5, 0.6, 0.7]})
    job(tmp_path, 6, ["lr=0.1", "seed=1"], "completed", 0.7)
    write_report(tmp_path)
    notes = " ".join(report_json(tmp_path)["notes"])
    median_std = (0.02 + 0.1) / 2
    assert "1 of 3 configurations completed once" in notes
    assert f"is {median_std:.3g}" in notes and f"~{2 * median_std:.3g} are not" in notes


def test_failed_repeat_counted_not_averaged_all_diverged_listed_last(tmp_path):
    sweep_of(
        tmp_path,
        {
            "lr=10": ["diverged", "diverged", "diverged"],
            "lr=0.01": [0.90, "failed", 0.80],
            "lr=0.1": [0.7, "pruned", 0.6],
        },
    )
    write_report(tmp_path)
    table = configs(tmp_path)
    assert list(table.index) == ["lr=0.01", "lr=0.1", "lr=10"]
    once_failed = table.loc["lr=0.01"]
    assert once_failed["n"] == 2 and once_failed["failed"] == 1
    assert once_failed["mean"] == pytest.approx(0.85)
    assert table.loc["lr=0.1", "pruned"] == 1
    diverged = table.loc["lr=10"]
    assert diverged["n"] == 0 and diverged["diverged"] == 3 and math.isnan(diverged["mean"])
    assert "| lr=10 " in (tmp_path / "configs.md").read_text()


def test_recommendation_top_of_summary_and_report_json(tmp_path):
    sweep_of(
        tmp_path,
        {
            "optimizer=adam lr=0.001": [0.90, 0.91, 0.92],
            "optimizer=adam lr=0.003": [0.95, 0.96, 0.97],
            "optimizer=adam lr=0.01": [0.80, 0.81, 0.82],
        },
    )
    text = write_report(tmp_path).read_text()
    assert text.index("## Recommendation") < text.index("## Jobs") < text.index("| best")
    assert "`python train.py optimizer=adam lr=0.003`" in text
    data = report_json(tmp_path)
    rec = data["recommended"]
    assert rec["configuration"] == {"optimizer": "adam", "lr": 0.003}
    assert rec["overrides"] == "optimizer=adam lr=0.003"
    assert rec["command"] == "python train.py optimizer=adam lr=0.003"  # seed left out
    assert rec["n"] == 3 and rec["mean"] == pytest.approx(0.96)
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert rec["ci"] == pytest.approx([0.96 - half, 0.96 + half])
    assert rec["repeats"] == ["seed=1", "seed=2", "seed=3"]
    assert rec["edge"] is None  # the middle lr of three
    assert data["direction"] == "maximize" and data["repeat_knobs"] == ["seed"]
    assert [c["configuration"] for c in data["configs"]][0] == "optimizer=adam lr=0.003"
    assert data["configs"][0]["mark"] == "best" and "lr_batch_rule" in data


def test_lr_at_the_edge_for_its_optimizer_suggests_the_next_range(tmp_path):
    sweep_of(
        tmp_path,
        {
            "optimizer=sgd lr=0.001": [0.5],
            "optimizer=sgd lr=0.01": [0.6],
            "optimizer=sgd lr=0.1": [0.9],
            "optimizer=adam lr=1": ["diverged"],  # another optimizer's lr: not sgd's edge
        },
        seeds=(1,),
    )
    text = write_report(tmp_path).read_text()
    edge = report_json(tmp_path)["recommended"]["edge"]
    assert edge["knob"] == "lr" and edge["value"] == 0.1 and edge["side"] == "largest"
    assert edge["suggestion"].endswith("lr=0.1,0.32,1")
    assert "largest lr tried" in text and "lr=0.1,0.32,1" in text


def test_a_search_gets_no_lr_edge_from_the_lrs_it_happened_to_try(tmp_path):
    for num, (lr, value) in enumerate([(0.0003, 0.7), (0.002, 0.8), (0.05, 0.9)]):
        job(tmp_path, num, [f"lr={lr}"], "completed", value, optuna={"trial": num})
    write_report(tmp_path)
    data = report_json(tmp_path)
    assert data["edge"] is None and data["recommended"]["edge"] is None
    assert len(data["configs"]) == 3  # each trial its own configuration


def test_a_config_that_diverged_in_some_seeds_is_not_recommended_over_a_clean_one(tmp_path):
    sweep_of(tmp_path, {"lr=2": [0.95, "diverged", "diverged"], "lr=0.1": [0.85, 0.86, 0.84]})
    text = write_report(tmp_path).read_text()
    recommended = report_json(tmp_path)["recommended"]
    assert recommended["overrides"] == "lr=0.1" and recommended["lost_repeats"] == 0
    (passed,) = recommended["passed_over"]
    assert "`lr=2`" in passed and "2 of its 3 repeats diverged or failed" in passed
    assert "not taken: `lr=2`" in text


def test_every_config_lost_repeats_the_best_is_flagged(tmp_path):
    sweep_of(tmp_path, {"lr=2": [0.95, "diverged"], "lr=3": [0.9, "failed"]}, seeds=(1, 2))
    text = write_report(tmp_path).read_text()
    assert report_json(tmp_path)["recommended"]["lost_repeats"] == 1
    assert "edge of stability" in text


def test_two_repeats_warn_that_ties_say_little(tmp_path):
    sweep_of(tmp_path, {"lr=0.01": [0.96, 0.95], "lr=0.1": [0.40, 0.90]}, seeds=(1, 2))
    write_report(tmp_path)
    notes = report_json(tmp_path)["notes"]
    assert any("1 degree of freedom" in n for n in notes), notes


def test_a_running_sweeps_answer_is_provisional(tmp_path):
    job(tmp_path, 0, ["lr=0.01", "seed=1"], "completed", 0.9)
    job(tmp_path, 1, ["lr=0.01", "seed=2"], None)
    write_report(tmp_path)
    assert "provisional" in report_json(tmp_path)["notes"][0]


def test_smallest_lr_edge_counts_diverged_jobs_as_tried(tmp_path):
    sweep_of(
        tmp_path,
        {"lr=0.0001": [0.9], "lr=0.001": [0.8], "lr=0.01": [0.7], "lr=1": ["diverged"]},
        seeds=(1,),
    )
    write_report(tmp_path)
    edge = report_json(tmp_path)["recommended"]["edge"]
    assert edge["side"] == "smallest" and edge["tried"] == [0.0001, 0.001, 0.01, 1.0]
    assert edge["suggestion"].endswith("lr=1e-05,2.2e-05,4.6e-05,0.0001")


def test_unfinished_sweep(tmp_path):
    job(tmp_path, 0, ["lr=0.01", "seed=1"], "completed", 0.9)
    job(tmp_path, 1, ["lr=0.01", "seed=2"], None)  # still running, no record yet
    grid = [[f"lr={lr}", f"seed={s}"] for lr in ("0.01", "0.1") for s in (1, 2)]
    write_report(tmp_path, plan=SweepPlan(grid=grid))
    table = configs(tmp_path)
    assert table.loc["lr=0.01", "n"] == 1 and table.loc["lr=0.01", "unfinished"] == 1
    assert table.loc["lr=0.1", "n"] == 0 and table.loc["lr=0.1", "never ran"] == 2
    assert report_json(tmp_path)["recommended"]["overrides"] == "lr=0.01"


def test_no_completed_job_no_recommendation(tmp_path):
    sweep_of(tmp_path, {"lr=10": ["diverged", "failed"]}, seeds=(1, 2))
    text = write_report(tmp_path).read_text()
    assert report_json(tmp_path)["recommended"] is None
    assert "no configuration completed" in text


def test_repeat_knobs_from_the_sweep_config(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"report_repeat_knobs": ["seed", "data.fold"]}})
    )
    num = 0
    for lr, base in (("0.01", 0.9), ("0.1", 0.7)):
        for fold in (0, 1):
            job(
                tmp_path,
                num,
                [f"lr={lr}", f"data.fold={fold}", "seed=1"],
                "completed",
                base + fold / 100,
            )
            num += 1
    write_report(tmp_path)
    assert list(configs(tmp_path)["n"]) == [2, 2]
    assert report_json(tmp_path)["repeat_knobs"] == ["seed", "data.fold"]
    write_report(tmp_path, repeat_knobs=["seed"])  # folds are then configurations
    assert len(configs(tmp_path)) == 4
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"report_repeat_knobs": "data.fold"}))
    write_report(tmp_path)  # a top-level key (a config that declares it), as text
    assert list(configs(tmp_path)["n"]) == [2, 2]


def test_lr_batch_rule_is_called_when_present(tmp_path, monkeypatch):
    sweep_of(
        tmp_path,
        {"lr=0.01 batch_size=32": [0.9, 0.91], "lr=0.1 batch_size=64": [0.8, 0.81]},
        seeds=(1, 2),
    )
    seen = {}

    def rule(jobs, direction, sweep_dir):
        seen.update(columns=set(jobs.columns), direction=direction, sweep_dir=sweep_dir)
        return {"slope": 1.0}

    module = types.ModuleType("trainlab.report.lr_batch_rule")
    module.lr_batch_rule = rule
    monkeypatch.setitem(sys.modules, "trainlab.report.lr_batch_rule", module)
    write_report(tmp_path)
    assert report_json(tmp_path)["lr_batch_rule"] == {"slope": 1.0}
    assert {"lr", "batch_size", "seed", "objective", "status"} <= seen["columns"]
    assert seen["direction"] == "maximize" and Path(seen["sweep_dir"]) == tmp_path

    monkeypatch.setitem(sys.modules, "trainlab.report.lr_batch_rule", types.ModuleType("x"))
    write_report(tmp_path)  # a module without the function: no rule, the report still written
    assert report_json(tmp_path)["lr_batch_rule"] is None


def test_console_ranks_configurations_when_repeated_jobs_otherwise(tmp_path):
    sweep_of(tmp_path, {"lr=0.01": [0.90, 0.92, 0.94], "lr=0.1": [0.5, 0.6, 0.7]})
    write_report(tmp_path)
    lines = ranking_lines(tmp_path)
    assert lines[0].startswith("best 2 of 2 configurations")
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert lines[1].split() == ["0.92", "±", f"{half:.2g}", "(n=3)", "best", "lr=0.01"]
    assert "(n=3) worse" in lines[2]

    single = tmp_path / "single"
    single.mkdir()
    sweep_of(single, {"lr=0.01": [0.9], "lr=0.1": [0.8]}, seeds=(1,))
    write_report(single)
    lines = ranking_lines(single)
    assert lines[0].startswith("best 2 of 2 completed jobs") and "job 0: 0.9" in lines[1]


def test_the_real_lr_batch_rule_lands_in_report_json(tmp_path):
    pytest.importorskip("trainlab.report.lr_batch_rule")
    results = {}
    for batch_size, best in ((32, 0.01), (64, 0.01), (128, 0.1)):
        for lr in (0.001, 0.01, 0.1):
            base = 0.9 - abs(lr - best)
            results[f"lr={lr} batch_size={batch_size}"] = [base - 0.01 * s for s in range(3)]
    sweep_of(tmp_path, results)
    write_report(tmp_path)
    rule = report_json(tmp_path)["lr_batch_rule"]
    assert isinstance(rule, dict) and rule  # the other module's finding, whatever its keys
    text = (tmp_path / "summary.md").read_text()
    if "alpha" in rule:
        assert "lr vs batch size: the best lr goes as batch_size **" in text
    if rule.get("plot"):
        assert f"({Path(rule['plot']).name})" in text


def test_the_command_to_train_a_configuration_again_leaves_the_sweeps_own_options_out():
    from trainlab.report.configs import Config
    from trainlab.report.recommend import command

    overrides = ["hparams_search=optuna", "lr=0.00026210878782654407", "optimizer=adamw"]
    overrides += ["hydra.sweeper.n_trials=12", "++hydra.job.env_set.TRAINLAB_OPTUNA_TRIAL=3"]
    overrides += ["hydra/launcher=joblib", "data=diabetes", "task.metrics=[mae,r2]"]
    assert command(Config(overrides=overrides)) == (
        "python train.py lr=0.00026210878782654407 optimizer=adamw data=diabetes "
        "'task.metrics=[mae,r2]'"
    )


def test_the_t_statistics_match_scipy_stats_over_a_battery():
    """stats.py computes the t distribution from scipy.special: the same numbers as
    scipy.stats's interval, Welch's and the paired t-test, for 2 to 9 repeats a side."""
    from trainlab.report.stats import differ_p, interval

    rng = np.random.default_rng(0)
    for _ in range(200):
        na, nb = rng.integers(2, 10, size=2)
        a = list(rng.normal(0.9, rng.uniform(1e-4, 0.05), na))
        b = list(rng.normal(0.9 + rng.normal(0, 0.02), rng.uniform(1e-4, 0.05), nb))
        welch = stats.ttest_ind(a, b, equal_var=False).pvalue
        assert differ_p(a, b) == pytest.approx(welch, rel=1e-9, abs=1e-12)
        n = min(na, nb)
        paired = stats.ttest_rel(a[:n], b[:n]).pvalue
        assert differ_p(a[:n], b[:n], paired=True) == pytest.approx(paired, rel=1e-9, abs=1e-12)
        low, high = stats.t.interval(0.95, na - 1, loc=np.mean(a), scale=stats.sem(a))
        got = interval(a)
        assert (got.low, got.high) == (pytest.approx(low), pytest.approx(high))


def test_a_diverged_runs_huge_value_gives_no_interval_and_no_p_rather_than_an_error():
    from trainlab.report.stats import differ_p, interval

    assert math.isnan(differ_p([1e200, 1.0, 3.0], [1.0, 2.0, 3.0]))
    assert interval([1e200, 1.0, 2.0]).high == math.inf
    assert math.isnan(differ_p([1e-170, 2e-170], [3e-170, 5e-170]))  # variances underflow
