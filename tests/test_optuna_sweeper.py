"""The Optuna sweeper as a user drives it: the old search-space syntax, pruning (a trial's
record and its state in the study, per epoch and per fold), n_trials as the study's total,
workers sharing one study, a study left by a dead worker, optuna-dashboard, and bad settings
refused before any trial."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from conftest import ROOT, cli_env, run_cli, train_cmd
from trainlab.checks import ConfigError
from trainlab.search.optuna_study import settle_dead_workers
from trainlab.search.space import distribution_of, parse_space
from trainlab.search.storage import StorageError, load_sweep_study, open_storage

QUICK = ["hparams_search=optuna", "max_epochs=3", "trainer.limit_train_batches=3", "logger=none"]
# prunes every trial whose objective (val/acc_best) is below 0.99 at its first report
PRUNE_ALL = "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.99}"


def records(sweep: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


# --- the search space --------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("lr=tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("dropout=interval(0.0, 0.5)", FloatDistribution(0.0, 0.5)),
        ("layers=tag(int, interval(1, 8))", IntDistribution(1, 8)),
        ("width=tag(log, int, interval(16, 1024))", IntDistribution(16, 1024, log=True)),
        ("optimizer=choice(sgd_momentum, adam)", CategoricalDistribution(["sgd_momentum", "adam"])),
        ("optimizer=adam,adamw", CategoricalDistribution(["adam", "adamw"])),
        ("batch_size=choice(32, 64)", CategoricalDistribution([32, 64])),
        ("batch_size=range(32, 257, 32)", IntDistribution(32, 256, step=32)),  # stop exclusive
        ("seed=range(3)", IntDistribution(0, 2)),
        ("x=shuffle(range(3))", None),  # a shuffled range is a set of choices
    ],
)
def test_the_old_search_space_syntax_gives_these_distributions(line, expected):
    (override,) = OverridesParser.create().parse_overrides([line])
    dist = distribution_of(override)
    if expected is None:
        assert isinstance(dist, CategoricalDistribution) and sorted(dist.choices) == [0, 1, 2]
    else:
        assert dist == expected


def test_the_command_line_adds_to_and_overrides_the_params():
    params = {"lr": "tag(log, interval(1e-4, 1e-1))", "optimizer": "choice(adam, sgd)"}
    space = parse_space(params, ["lr=0.01", "batch_size=32,64", "max_epochs=5"])
    assert set(space.distributions) == {"optimizer", "batch_size"}  # a fixed lr wins
    assert space.fixed == ["lr=0.01", "max_epochs=5"]
    assert space.overrides({"optimizer": "adam", "batch_size": 64}) == [
        "optimizer=adam",
        "batch_size=64",
        "lr=0.01",
        "max_epochs=5",
    ]
    assert parse_space({}, ["lr=1e-3,1e-2", "batch_size=range(16,65,16)"]).size() == 8


@pytest.mark.parametrize(
    "line, says",
    [
        ("lr=tag(log, interval(0, 1))", "not above 0"),
        ("lr=interval(1, 1)", "empty"),
        ("lr=tag(fancy, interval(0.1, 1))", "fancy"),
        ("n=range(5, 5)", "holds no value"),
    ],
)
def test_a_search_space_that_cannot_be_searched_is_refused(line, says):
    with pytest.raises(ConfigError, match=says):
        parse_space({}, [line])


# --- bad settings: one paragraph, exit code 2, nothing written ---------------------------


@pytest.mark.parametrize(
    "override, says",
    [
        ("hydra.sweeper.pruner=sometimes", "pruner='sometimes' is not one the sweeper knows"),
        ("hydra.sweeper.sampler=annealing", "choose one of tpe, random, cmaes, gp, qmc, grid"),
        ("hydra.sweeper.n_trials=0", "n_trials=0 must be a whole number >= 1"),
        ("hydra.sweeper.storage=sqlite:////no/such/dir/x.db", "cannot be opened"),
        ("hydra.sweeper.storage=notes.txt", "neither a database URL"),
        ("hydra.sweeper.sampler=grid", "grid needs a list of values for every parameter"),
        ("hydra.sweeper.pruner=wilcoxon", "cv.folds=0 can never prune"),
        ("hydra.sweeper.pruner=wilcoxon cv.folds=3", "Use cv.folds=5 or more"),
        ("hydra.sweeper.direction=minimize", "rank the runs upside down"),
        ("optimized_direction=minimize", "contradicts itself"),
        ("seed=1,2", "the best trial would be the luckiest seed"),
        ("data=digits,breast_cancer", "search over data, which sets the objective"),
        ("experiment=breast_cancer_mlp,diabetes_mlp", "search over experiment"),
        ("optimized_metric=val/acc_best,val/loss_best", "would rank an accuracy against an MSE"),
        ("+hydra.sweeper.pruner_options.patience=3", "not an argument of optuna's Successive"),
        ("+hydra.sweeper.sampler_options.n_startup_trials=many", "takes int there"),
        ("hydra.sweeper.direction=upward", "give minimize or maximize"),
        ("hydra.sweeper.direction=[maximize,minimize]", "several is not supported"),
        ("hydra.sweep.subdir=${hydra.job.override_dirname}", "after its trial number"),
    ],
)
def test_bad_sweeper_settings_are_refused_before_any_trial(tmp_path, override, says):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", *QUICK, *override.split(), f"hydra.sweep.dir={sweep}", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert says in line and line.endswith("Nothing was written."), line
    assert "Traceback" not in result.stderr
    assert not sweep.exists()


def test_a_sweep_dir_of_another_sweep_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "metrics.json").write_text('{"status": "completed"}')
    result = run_cli("-m", *QUICK, f"hydra.sweep.dir={sweep}", timeout=120)
    assert result.returncode == 2
    assert "holds jobs that are no trials of the study" in result.stderr
    assert sorted(p.name for p in sweep.iterdir()) == ["0"]  # nothing added, nothing touched


# --- a study written by the optuna-2.10 sweeper --------------------------------------------


def old_study(path: Path) -> str:
    """An SQLite study as optuna 2.10 (hydra-optuna-sweeper) wrote it."""
    with sqlite3.connect(path) as db:
        db.executescript((ROOT / "tests" / "data" / "optuna_2_10_study.sql").read_text())
    return f"sqlite:///{path}"


def test_an_old_study_gets_the_command_that_upgrades_it(tmp_path):
    url = old_study(tmp_path / "optuna.db")
    with pytest.raises(StorageError, match=rf"optuna storage upgrade --storage {url}"):
        open_storage(url)
    sweep = tmp_path  # the old sweeper kept it in the sweep dir as optuna.db
    result = run_cli("-m", *QUICK, f"hydra.sweep.dir={sweep}", timeout=120)
    assert result.returncode == 2
    assert "holds a study of the old Optuna sweeper" in result.stderr
    assert f"optuna storage upgrade --storage {url}" in result.stderr
    assert f"hydra.sweeper.storage={url}" in result.stderr


# --- pruning -----------------------------------------------------------------------------


def test_a_pruned_trial_stops_at_that_epoch_is_pruned_in_the_study_and_is_not_tested(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", *QUICK, "hydra.sweeper.n_trials=2", PRUNE_ALL, f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_sweep_study(sweep)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    for trial in study.trials:
        record = records(sweep)[trial.number]
        assert record["status"] == "pruned" and record["objective"] is None
        assert record["pruned"]["epoch"] == 1 and record["pruned"]["metric"] == "val/acc_best"
        assert record["pruned"]["value"] == pytest.approx(trial.intermediate_values[1])
        assert record["optuna"] == {"trial": trial.number, "study": "train"}
        assert not any(k.startswith("test/") for k in record["metrics"])  # no test run
        assert trial.user_attrs["trainlab_status"] == "pruned"
    assert "pruned at epoch 1" in result.stdout + result.stderr


def test_without_a_pruner_every_epoch_is_reported_and_the_trial_completes(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", *QUICK, "hydra.sweeper.n_trials=1", "hydra.sweeper.pruner=none",
        f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = load_sweep_study(sweep).trials
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2, 3]  # one report per epoch
    assert trial.value == pytest.approx(max(trial.intermediate_values.values()))


def test_cross_validation_reports_each_fold_and_a_pruned_trial_skips_the_rest(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", *QUICK, "cv.folds=3", "test=false", "hydra.sweeper.n_trials=1", PRUNE_ALL,
        f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = load_sweep_study(sweep).trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
    record = records(sweep)[0]
    assert record["status"] == "pruned" and record["pruned"]["fold"] == 1
    assert (sweep / "0" / "fold_0").is_dir() and not (sweep / "0" / "fold_1").exists()


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_a_pruned_trial_can_be_resumed_as_a_run_of_its_own(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *QUICK, "hydra.sweeper.n_trials=1", PRUNE_ALL, f"hydra.sweep.dir={sweep}"]
    assert run_cli(*args).returncode == 0
    resumed = run_cli(f"resume={sweep / '0'}", "max_epochs=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = records(sweep)[0]
    assert record["status"] == "completed"  # trained on to max_epochs, then tested
    assert record["trained"]["epochs"] == 3 and "test/acc" in record["metrics"]
    (trial,) = load_sweep_study(sweep).trials
    assert trial.state == TrialState.PRUNED  # the study keeps what the sweep saw


# --- the study's total, and several workers ----------------------------------------------


def test_interrupted_and_never_launched_trials_do_not_count_and_are_asked_again(tmp_path):
    from trainlab.search.optuna_study import counted, requeue_untried

    storage = open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(study_name="s", storage=storage)
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    for status in ("completed", "interrupted", "never ran", "diverged"):
        trial = study.ask(space)
        trial.set_user_attr("trainlab_status", status)
        done = status == "completed"
        study.tell(
            trial, 0.5 if done else None, state=TrialState.COMPLETE if done else TrialState.FAIL
        )
    assert counted(study) == 2  # the completed and the diverged one
    assert requeue_untried(study) == 2 and requeue_untried(study) == 0  # once each
    again = [study.ask(space) for _ in range(2)]
    assert [t.params["lr"] for t in again] == [
        study.trials[1].params["lr"],
        study.trials[2].params["lr"],
    ]


@pytest.mark.slow
def test_two_workers_share_one_study_and_run_exactly_n_trials(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = train_cmd("-m", *QUICK, "hydra.sweeper.n_trials=5", f"hydra.sweep.dir={sweep}")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    workers = [subprocess.Popen(cmd, cwd=ROOT, env=cli_env(), **pipes) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
    study = load_sweep_study(sweep)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert sorted(records(sweep)) == [0, 1, 2, 3, 4]  # one job dir per trial
    owners = {t.user_attrs["trainlab_worker"] for t in study.trials}
    assert len(owners) == 2, owners  # both workers ran trials
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 5  # the second worker did not replay the seeded first draws


def test_a_trial_left_running_by_a_dead_worker_is_told_from_its_record(tmp_path):
    sweep = tmp_path / "sweep"
    storage = open_storage(str(sweep / "optuna.journal"))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    for number, status in enumerate(("completed", "running")):
        trial = study.ask({"lr": FloatDistribution(1e-4, 1e-1, log=True)})
        trial.set_user_attr("trainlab_worker", f"{socket.gethostname()}:{dead.stdout.strip()}")
        job = sweep / str(number)
        job.mkdir()
        (job / "metrics.json").write_text(json.dumps({"status": status, "objective": 0.9}))
    mine = study.ask()
    mine.set_user_attr("trainlab_worker", f"{socket.gethostname()}:{os.getpid()}")  # alive
    settle_dead_workers(study, sweep)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING]
    assert study.trials[0].value == 0.9
    assert records(sweep)[1]["status"] == "failed"
    assert "ended before the job did" in records(sweep)[1]["error"]


# --- optuna-dashboard --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study_from_the_storage_the_sweep_prints(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", *QUICK, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = (result.stdout + result.stderr).split("optuna-dashboard ")[1].split(")")[0]
    assert printed == str(sweep / "optuna.journal")
    port = free_port()
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    server = subprocess.Popen(
        [str(dashboard), printed, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no dashboard"
                time.sleep(0.3)
        (summary,) = studies
        assert summary["study_name"] == "train"
        url = f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0"
        with urllib.request.urlopen(url, timeout=10) as r:
            detail = json.load(r)
        assert [t["number"] for t in detail["trials"]] == [0, 1]
        study = load_sweep_study(sweep)
        shown = {t["number"]: t["state"] for t in detail["trials"]}
        assert shown == {t.number: t.state.name.capitalize() for t in study.trials}
    finally:
        server.terminate()
        server.wait(timeout=30)
