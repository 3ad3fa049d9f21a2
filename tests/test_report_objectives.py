"""A sweep whose jobs optimize different objectives (data=digits: val/acc_best, maximized;
data=diabetes: val/mse_best, minimized; a swept optimized_metric) is reported one objective
at a time, never ranked, compared, averaged or tied across them (report/objectives.py); a
sweep of one objective looks as it always did. Synthetic sweep directories, and one real
sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import run_cli
from trainlab.report import write_report
from trainlab.report.progress import job_line, ranking_lines
from trainlab.report.summary import summarize
from trainlab.search.plan import SweepPlan

OBJECTIVE = {  # data set -> what its records say
    "digits": ("val/acc_best", "maximize"),
    "diabetes": ("val/mse_best", "minimize"),
}
ACC = "objectives/val_acc_best-maximize"
MSE = "objectives/val_mse_best-minimize"


def job(sweep: Path, num: int, overrides: list[str], objective=None, status="completed", **rec):
    """A job directory; `rec` overrides the record (optimized_metric, direction); status
    None: started, no record yet."""
    path = sweep / str(num)
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status is None:
        return
    given = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)}
    metric, direction = OBJECTIVE[given.get("data", "digits")]
    metric, direction = rec.get("optimized_metric", metric), rec.get("direction", direction)
    done = status == "completed"
    record = {
        "status": status,
        "objective": objective if done else (-1e9 if direction == "maximize" else 1e9),
        "optimized_metric": metric,
        "direction": direction,
        "metrics": {metric: objective} if done else {},
        "hparams": {"lr": 0.001, **given},
        "duration_s": 1.0,
        "trained": {"epochs": 2},
    }
    if not done:
        record["error"] = f"{status} on purpose"
    (path / "metrics.json").write_text(json.dumps(record))


# (data, lr) -> the objective of seeds 1 and 2: the best digits lr is 0.1 (higher accuracy),
# the best diabetes lr is 0.01 (lower error); ranked together by either direction, one of
# them would come out wrong
RESULTS = {
    ("digits", 0.01): (0.90, 0.91),
    ("digits", 0.1): (0.95, 0.96),
    ("diabetes", 0.01): (0.30, 0.31),
    ("diabetes", 0.1): (0.60, 0.62),
}


def two_objective_sweep(sweep: Path) -> None:
    num = 0
    for (data, lr), values in RESULTS.items():
        for seed, value in zip((1, 2), values, strict=True):
            job(sweep, num, [f"data={data}", f"lr={lr}", f"seed={seed}"], value)
            num += 1


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_each_objective_is_ranked_its_own_way_and_never_against_the_other(tmp_path):
    two_objective_sweep(tmp_path)
    df = summarize(tmp_path)
    assert list(df["optimized_metric"]) == ["val/acc_best"] * 4 + ["val/mse_best"] * 4
    assert list(df["objective"]) == [0.96, 0.95, 0.91, 0.90, 0.30, 0.31, 0.60, 0.62]
    assert list(df["best"]) == ["★", "", "", "", "★", "", "", ""]  # one best per objective

    write_report(tmp_path)
    table = pd.read_csv(tmp_path / "summary.csv")
    assert list(table.columns[:3]) == ["best", "optimized_metric", "direction"]
    assert list(table["objective"]) == list(df["objective"])
    for where, data, lrs in ((ACC, "digits", [0.1, 0.1, 0.01, 0.01]), (MSE, "diabetes", None)):
        own = pd.read_csv(tmp_path / where / "summary.csv")
        assert len(own) == 4 and own["overrides"].str.startswith(f"data={data}").all()
        if lrs:
            assert list(own["lr"]) == lrs
    mse = pd.read_csv(tmp_path / MSE / "summary.csv")
    assert list(mse["objective"]) == [0.30, 0.31, 0.60, 0.62]  # lower error first

    # configurations: the seeds averaged within an objective, ranked its way, tied with
    # nothing of the other one
    configs = pd.read_csv(tmp_path / "configs.csv")
    assert list(configs["configuration"]) == [
        "data=digits lr=0.1",
        "data=digits lr=0.01",
        "data=diabetes lr=0.01",
        "data=diabetes lr=0.1",
    ]
    assert list(configs["mark"].fillna("")) == ["best", "worse", "best", "worse"]
    assert list(configs["mean"]) == pytest.approx([0.955, 0.905, 0.305, 0.61])
    assert list(configs["direction"]) == ["maximize"] * 2 + ["minimize"] * 2
    for where, best in ((ACC, "data=digits lr=0.1"), (MSE, "data=diabetes lr=0.01")):
        own = pd.read_csv(tmp_path / where / "configs.csv")
        assert own["configuration"].iloc[0] == best and len(own) == 2


def test_the_headline_says_how_many_objectives_and_what_set_them(tmp_path):
    two_objective_sweep(tmp_path)
    text = write_report(tmp_path).read_text()
    head = text.split("\n## ")[0]
    assert "**2 objectives**" in head and "(set by `data`)" in head
    assert "never against another's" in head
    assert (
        "1. val/acc_best (best validation accuracy), maximized: higher is better: "
        f"`data=digits` (4 jobs, 4 completed; `{ACC}/`)" in head
    )
    assert (
        "2. val/mse_best (best validation mean squared error), minimized: lower is better: "
        f"`data=diabetes` (4 jobs, 4 completed; `{MSE}/`)" in head
    )
    assert "- jobs: 8 completed" in head
    assert "- objective:" not in head and "- best:" not in head  # nothing sweep-wide
    sections = text.split("\n## Objective ")[1:]
    assert [s.splitlines()[0] for s in sections] == [
        "1 of 2: val/acc_best, maximized (`data=digits`)",
        "2 of 2: val/mse_best, minimized (`data=diabetes`)",
    ]
    # each section ranks its own jobs only, and names its own best
    assert "`data=diabetes" not in sections[0] and "`data=digits" not in sections[1]
    assert "- best: job 3 (`data=digits lr=0.1 seed=2`), objective 0.9600" in sections[0]
    assert "- best: job 4 (`data=diabetes lr=0.01 seed=1`), objective 0.3000" in sections[1]
    configs_md = (tmp_path / "configs.md").read_text()
    assert configs_md.startswith("# Configurations: 2 objectives, each ranked on its own")
    assert "## Objective 2 of 2 (`data=diabetes`): Configurations: val/mse_best" in configs_md


def test_a_recommendation_per_objective_and_none_across_them(tmp_path):
    two_objective_sweep(tmp_path)
    text = write_report(tmp_path).read_text()
    acc, mse = text.split("\n## Objective ")[1:]
    assert "- **`data=digits lr=0.1`**: val/acc_best 0.955" in acc
    assert "- train it: `python train.py data=digits lr=0.1`" in acc
    assert "- **`data=diabetes lr=0.01`**: val/mse_best 0.305" in mse
    assert "- train it: `python train.py data=diabetes lr=0.01`" in mse
    report = read_json(tmp_path / "report.json")
    assert "recommended" not in report and "2 objectives" in report["note"]
    assert report["set_by"] == ["data"]
    found = report["objectives"]
    assert [(o["objective"], o["direction"]) for o in found] == list(OBJECTIVE.values())
    assert [o["recommended"]["overrides"] for o in found] == [
        "data=digits lr=0.1",
        "data=diabetes lr=0.01",
    ]
    assert [o["set_by"] for o in found] == [["data=digits"], ["data=diabetes"]]
    assert found[1]["jobs"] == ["4", "5", "6", "7"] and found[1]["dir"] == MSE
    own = read_json(tmp_path / MSE / "report.json")
    assert own["recommended"]["command"] == "python train.py data=diabetes lr=0.01"
    assert own["recommended"]["mean"] == pytest.approx(0.305)
    assert own["recommended"]["tied"] == []  # nothing of the digits jobs is a tie
    assert (
        (tmp_path / MSE / "summary.md")
        .read_text()
        .startswith(f"# Sweep report: {tmp_path.name}, objective 2 of 2\n")
    )


def test_plots_and_the_console_go_per_objective(tmp_path):
    (tmp_path / "objective_vs_lr.png").write_bytes(b"an earlier report's, mixed")
    two_objective_sweep(tmp_path)
    text = write_report(tmp_path).read_text()
    assert not (tmp_path / "objective_vs_lr.png").exists()  # a mixed axis is not left behind
    for where in (ACC, MSE):
        assert (tmp_path / where / "objective_vs_lr.png").is_file()
        assert f"]({where}/objective_vs_lr.png)" in text
    lines = ranking_lines(tmp_path)
    assert lines[0] == f"2 objectives, each ranked on its own ({tmp_path / 'summary.md'}):"
    at = lines.index("objective 2 of 2: val/mse_best, minimized (data=diabetes):")
    assert lines[1] == "objective 1 of 2: val/acc_best, maximized (data=digits):"
    assert lines[2].startswith("  best 2 of 2 configurations") and "0.955" in lines[3]
    assert lines[at + 1].startswith("  best 2 of 2 configurations")
    assert "0.305" in lines[at + 2] and "data=diabetes lr=0.01" in lines[at + 2]
    # a job's line gives the best so far of its own objective
    line = job_line(tmp_path, tmp_path / "6", ["data=diabetes", "lr=0.1", "seed=1"])
    assert line.endswith("val/mse_best 0.6 (best so far of val/mse_best: 0.3, job 4)")
    line = job_line(tmp_path, tmp_path / "0", ["data=digits", "lr=0.01", "seed=1"])
    assert line.endswith("(best so far of val/acc_best: 0.96, job 3)")


def test_jobs_without_a_record_go_with_the_objective_their_overrides_select(tmp_path):
    for num, (data, lr, value) in enumerate((("digits", 0.1, 0.9), ("diabetes", 0.1, 0.4))):
        job(tmp_path, num, [f"data={data}", f"lr={lr}"], value)
    job(tmp_path, 2, ["data=diabetes", "lr=0.01"], status="diverged")
    job(tmp_path, 3, ["data=digits", "lr=0.01"], status=None)  # no record yet
    grid = [[f"data={d}", f"lr={lr}"] for d in ("digits", "diabetes") for lr in (0.1, 0.01)]
    grid += [["data=diabetes", "lr=1.0"], ["data=breast_cancer", "lr=0.1"]]
    text = write_report(tmp_path, plan=SweepPlan(grid=grid), jobs_ended=True).read_text()
    acc, mse = text.split("\n## Objective ")[1:]
    assert "- jobs: 1 completed, 1 interrupted" in acc
    assert "- jobs: 1 completed, 1 diverged, 1 never ran" in mse
    assert "- job 4: `data=diabetes lr=1.0`" in mse
    assert "objective not known: 1 job whose record" in text.split("\n## ")[0]
    unknown = text.split("## Jobs whose objective is not known (ranked with none)")[1]
    assert "- job 5 (never ran): `data=breast_cancer lr=0.1`" in unknown
    table = pd.read_csv(tmp_path / "summary.csv")
    assert list(table["job"]) == [0, 3, 1, 2, 4, 5]
    assert list(table["best"].fillna("")) == ["★", "", "★", "", "", ""]
    assert read_json(tmp_path / "report.json")["unknown_objective_jobs"] == ["5"]


def test_a_swept_optimized_metric_splits_one_data_set(tmp_path):
    """optimized_metric=val/acc_best,val/loss_best on digits: opposite directions."""
    values = {"val/acc_best": (0.9, 0.95), "val/loss_best": (0.2, 0.5)}
    num = 0
    for metric, (low, high) in values.items():
        direction = "maximize" if metric.startswith("val/acc") else "minimize"
        for lr, value in ((0.01, low), (0.1, high)):
            overrides = [f"optimized_metric={metric}", f"lr={lr}"]
            job(tmp_path, num, overrides, value, optimized_metric=metric, direction=direction)
            num += 1
    write_report(tmp_path)
    found = read_json(tmp_path / "report.json")["objectives"]
    assert [o["set_by"] for o in found] == [
        ["optimized_metric=val/acc_best"],
        ["optimized_metric=val/loss_best"],
    ]
    assert [o["recommended"]["configuration"]["lr"] for o in found] == [0.1, 0.01]


def one_objective_sweep(sweep: Path) -> None:
    for num, (lr, value) in enumerate(((0.01, 0.90), (0.1, 0.95), (0.001, 0.80))):
        job(sweep, num, ["data=digits", f"lr={lr}"], value)


def test_a_sweep_of_one_objective_is_reported_as_before(tmp_path):
    one_objective_sweep(tmp_path)
    text = write_report(tmp_path).read_text()
    assert text.splitlines()[:6] == [
        f"# Sweep report: {tmp_path.name}",
        "",
        f"- sweep directory: `{tmp_path}`",
        "- objective: val/acc_best (best validation accuracy), maximized: higher is better",
        "- jobs: 3 completed",
        "- best: job 1 (`data=digits lr=0.1`), objective 0.9500",
    ]
    assert "objectives" not in text and "## Objective" not in text
    assert (
        text.count("## Recommendation") == 1 and "![objective_vs_lr](objective_vs_lr.png)" in text
    )
    assert not (tmp_path / "objectives").exists()
    table = pd.read_csv(tmp_path / "summary.csv")
    assert "optimized_metric" not in table and list(table["objective"]) == [0.95, 0.90, 0.80]
    report = read_json(tmp_path / "report.json")
    assert "objectives" not in report and report["objective"] == "val/acc_best"
    assert report["recommended"]["overrides"] == "data=digits lr=0.1"
    lines = ranking_lines(tmp_path)
    assert lines[0] == f"best 3 of 3 completed jobs ({tmp_path / 'summary.csv'}):"
    assert lines[1] == "  job 1: 0.95  data=digits lr=0.1"
    line = job_line(tmp_path, tmp_path / "0", ["data=digits", "lr=0.01"])
    assert (
        line == "job 0 data=digits lr=0.01: completed, val/acc_best 0.9 (best so far 0.95, job 1)"
    )


@pytest.mark.slow
def test_a_real_sweep_over_two_data_sets_is_reported_per_objective(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "data=digits,diabetes", "max_epochs=2", "logger=none"]
    result = run_cli(*args, f"hydra.sweep.dir={sweep}", project=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    records = [read_json(sweep / j / "metrics.json") for j in ("0", "1")]
    assert [(r["optimized_metric"], r["direction"]) for r in records] == list(OBJECTIVE.values())
    text = (sweep / "summary.md").read_text()
    assert "**2 objectives**" in text and "(set by `data`)" in text
    acc, mse = text.split("\n## Objective ")[1:]
    assert "`data=digits" in acc and "data=diabetes" not in acc
    assert "`data=diabetes" in mse and "data=digits" not in mse
    assert f"val/mse_best {records[1]['objective']:.4g}" in mse
    report = read_json(sweep / "report.json")
    assert [o["recommended"]["jobs"] for o in report["objectives"]] == [["0"], ["1"]]
    # the console: no "best 2 of 2 completed jobs" mixing them, a ranking per objective
    assert "best 2 of 2 completed jobs" not in output
    assert "2 objectives, each ranked on its own" in output
    assert output.count("best 1 of 1 completed jobs") == 2
    assert "objective 2 of 2: val/mse_best, minimized (data=diabetes):" in output
