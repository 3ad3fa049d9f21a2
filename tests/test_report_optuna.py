"""The sweep report of an Optuna search with pruning (issue 14): pruned trials as their own
outcome (how far they got, ranked after the completed jobs, never averaged), the Optuna
view from the real study (history, importances), and the report of other sweeps unchanged.

The sweep directories are synthetic: job directories with the records the jobs write, and a
real Optuna study in a journal file, told what those jobs did through ask/report/tell.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from trainlab.report import write_report
from trainlab.report.progress import job_line
from trainlab.search.plan import SweepPlan
from trainlab.search.storage import write_study_file

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OPTUNA_PNGS = ("optuna_history.png", "optuna_importances.png")
SPACE = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
}


def write_job(sweep: Path, num: int, params: dict, record: dict) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"{k}={v}" for k, v in params.items()])
    )
    base = {"optimized_metric": "val/acc_best", "direction": "maximize", "duration_s": 1.0}
    (job / "metrics.json").write_text(json.dumps({**base, "hparams": params, **record}))


def outcome(num: int) -> str:
    """Trials 1, 4, 7: pruned (7 after two folds of a cross-validation), 5: diverged."""
    return {1: "pruned", 4: "pruned", 7: "pruned cv", 5: "diverged"}.get(num, "completed")


def make_optuna_sweep(sweep: Path, trials: int, space: dict = SPACE) -> dict[int, float]:
    """A sweep of `trials` jobs and its study; returns each pruned trial's last value."""
    journal = sweep / "optuna.journal"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.create_study(
        storage=storage,
        study_name="search",
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    write_study_file(
        sweep,
        storage=str(journal),
        study_name="search",
        directions=["maximize"],
        sampler="tpe",
        pruner="asha",
    )
    pruned_at = {}
    for num in range(trials):
        trial = study.ask(space)
        tag = {"optuna": {"trial": trial.number, "study": "search"}}
        kind = outcome(num)
        first, second = 0.5 + num / 100, 0.6 + num / 100
        if kind == "diverged":
            study.tell(trial, state=TrialState.FAIL)
            record = {"status": "diverged", "objective": -1e9, "error": "diverged at step 3"}
        elif kind.startswith("pruned"):
            trial.report(first, step=1)
            trial.report(second, step=2)
            study.tell(trial, state=TrialState.PRUNED)
            pruned_at[num] = second
            where = {"fold": 2} if kind == "pruned cv" else {"epoch": 2}
            pruned = {**where, "step": 2, "value": second, "metric": "val/acc"}
            record = {"status": "pruned", "objective": None, "pruned": pruned}
            record["metrics"] = {"val/acc": second, "cv/mean": second, "test/acc": second}
        else:
            final = 0.7 + (trial.params["lr"] * 3 if "lr" in trial.params else num / 100)
            trial.report(first, step=1)
            study.tell(trial, final)
            record = {"status": "completed", "objective": final, "trained": {"epochs": 3}}
            record["metrics"] = {"val/acc_best": final, "test/acc": final - 0.01}
        write_job(sweep, num, trial.params, {**record, **tag})
    return pruned_at


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200


def test_pruned_trials_are_their_own_outcome_ranked_after_the_completed(tmp_path):
    pruned_at = make_optuna_sweep(tmp_path, trials=10)
    summary_md = write_report(tmp_path, plan=SweepPlan(trials=12))
    table = pd.read_csv(tmp_path / "summary.csv", dtype={"job": str})

    statuses = ["completed"] * 6 + ["pruned"] * 3 + ["diverged"] + ["never ran"] * 2
    assert list(table["status"]) == statuses
    table = table[table["status"] != "never ran"]
    done = table[table["status"] == "completed"]
    assert list(done["objective"]) == sorted(done["objective"], reverse=True)
    assert table["best"].iloc[0] == "★" and table["best"].iloc[1:].isna().all()
    pruned = table[table["status"] == "pruned"]
    assert list(pruned["job"]) == ["1", "4", "7"]  # job order: no final value to rank by
    assert list(pruned["reached"]) == ["epoch 2", "epoch 2", "2 folds"]
    assert list(pruned["reached_value"]) == pytest.approx([pruned_at[n] for n in (1, 4, 7)])
    # a partial result is not a result: no objective, no cv mean, no test accuracy
    assert pruned["objective"].isna().all()
    assert pruned["cv_mean"].isna().all() if "cv_mean" in pruned else True
    assert pruned["test/acc"].isna().all() and done["test/acc"].notna().all()
    assert table[table["status"] != "pruned"]["reached"].isna().all()
    assert list(table["trial"]) == [int(j) for j in table["job"]]  # the trial numbers
    written = pd.read_csv(tmp_path / "summary.csv", dtype=str)["trial"].dropna()
    assert len(written) == 10 and written.str.fullmatch(r"\d+").all()  # not "2.0"

    text = summary_md.read_text()
    assert "- jobs: 6 completed, 3 pruned, 1 diverged, 2 never ran" in text
    assert "their val/acc then" in text
    assert "Optuna study `search`" in text
    did_not_complete = text[text.index("## Jobs that did not complete") :]
    assert "job 5 (diverged)" in did_not_complete and "(pruned)" not in did_not_complete
    for png in OPTUNA_PNGS:
        assert f"({png})" in text
        assert_png(tmp_path / png)


def test_the_console_line_of_a_pruned_job_says_how_far_it_got(tmp_path):
    make_optuna_sweep(tmp_path, trials=8)
    best = max(
        json.loads((tmp_path / str(n) / "metrics.json").read_text())["objective"]
        for n in range(8)
        if outcome(n) == "completed"
    )
    line = job_line(tmp_path, tmp_path / "4", ["lr=0.01"])
    assert line.startswith("job 4 lr=0.01: pruned at epoch 2 (val/acc 0.64) (best so far ")
    assert f"best so far {best:.4g}" in line
    line = job_line(tmp_path, tmp_path / "7", ["lr=0.02"])
    assert line.startswith("job 7 lr=0.02: pruned after 2 folds (fold 2: val/acc 0.67)")


def test_fewer_than_8_trials_draw_no_optuna_plots(tmp_path):
    make_optuna_sweep(tmp_path, trials=7)
    text = write_report(tmp_path).read_text()
    assert not any((tmp_path / png).exists() for png in OPTUNA_PNGS)
    assert "7 trials ended, 8 needed" in text
    assert "- jobs: 4 completed, 2 pruned, 1 diverged" in text


def test_one_parameter_gives_a_history_and_no_importances(tmp_path):
    make_optuna_sweep(tmp_path, trials=9, space={"lr": SPACE["lr"]})
    text = write_report(tmp_path).read_text()
    assert_png(tmp_path / "optuna_history.png")
    assert not (tmp_path / "optuna_importances.png").exists()
    assert "no optuna_importances.png: the search has 1 parameter(s)" in text


def test_a_study_that_cannot_be_opened_leaves_the_rest_of_the_report(tmp_path):
    make_optuna_sweep(tmp_path, trials=8)
    study_file = json.loads((tmp_path / "optuna_study.json").read_text())
    write_study_file(tmp_path, **{**study_file, "study_name": "renamed"})
    text = write_report(tmp_path).read_text()
    assert "the study cannot be opened" in text and "- jobs: 4 completed, 3 pruned" in text
    assert not any((tmp_path / png).exists() for png in OPTUNA_PNGS)


def test_a_sweep_without_a_study_reports_as_before_without_optuna(tmp_path):
    """A grid sweep's report names no study, draws no Optuna plot, and never imports optuna
    (it works where optuna is not installed)."""
    for num, lr in enumerate((0.001, 0.01, 0.1)):
        record = {"status": "completed", "objective": 0.8 + lr, "metrics": {}}
        write_job(tmp_path, num, {"lr": lr}, record)
    script = (
        "import sys; sys.modules['optuna'] = None\n"  # `import optuna` raises ImportError
        "from trainlab.report import write_report\n"
        f"print(write_report({str(tmp_path)!r}).read_text())\n"
        "assert 'optuna' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "- jobs: 3 completed\n" in ran.stdout and "Optuna" not in ran.stdout
    table = pd.read_csv(tmp_path / "summary.csv")
    assert list(table["lr"]) == [0.1, 0.01, 0.001]
    assert "reached" not in table and "trial" not in table
    assert not any((tmp_path / png).exists() for png in OPTUNA_PNGS)
