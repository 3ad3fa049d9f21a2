"""Sweeps lose nothing: a job whose process dies is recorded `failed` and the sweep goes on; a
sweep stopped by a signal writes its report (completed, interrupted, never ran); the report
reads every job it can and lists the unreadable ones; diverged trials reach Optuna as FAIL;
the report's files and the Optuna study are writable by the group the umask allows; launcher
settings that do not apply are refused before anything is written; the README's search-space
examples compose."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, cli_env, compose_run, run_cli, train_cmd
from quick import QUICK
from trainlab.report import write_report
from trainlab.search.plan import SweepPlan
from trainlab.search.storage import load_sweep_study

FAST = [*QUICK, "logger=none"]
HELPERS = {"PYTHONPATH": str(ROOT / "tests")}  # kill_at_step.KillAtStep
# one job long enough to be stopped in the middle (digits: ~0.3 s an epoch)
LONG = ["max_epochs=300", "checkpoint_every_n_steps=10", "logger=none"]


def jobs_of(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def summary_of(sweep: Path) -> tuple[pd.DataFrame, str]:
    table = pd.read_csv(sweep / "summary.csv", dtype={"job": str})
    return table, (sweep / "summary.md").read_text()


def status_by_job(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["job"].fillna(""), table["status"], strict=True))


def fake_job(sweep: Path, num: int, lr: float, status: str = "completed") -> Path:
    """A job directory as a finished job leaves it."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"lr={lr}"]))
    objective = 0.5 + lr if status == "completed" else None
    record = {
        "status": status,
        "objective": objective,
        "optimized_metric": "val/acc_best",
        "direction": "maximize",
        "metrics": {"val/acc_best": objective, "test/acc": objective} if objective else {},
        "hparams": {"lr": lr},
        "duration_s": 1.0,
        "trained": {"epochs": 2},
    }
    (job / "metrics.json").write_text(json.dumps(record))
    (job / "csv").mkdir()
    (job / "csv" / "metrics.csv").write_text(
        "epoch,step,val/loss,val/acc\n0,1,1.0,0.5\n1,2,0.5,0.6\n"
    )
    return job


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate()[1][-3000:])
        time.sleep(0.2)


# --- the report reads every job it can ---------------------------------------------------

UNREADABLE = {
    "empty metrics.json": ("metrics.json", b"", "metrics.json: empty"),
    "truncated metrics.json": ("metrics.json", b'{"status": "compl', "not valid JSON"),
    "metrics.json not a dict": ("metrics.json", b'["completed", 0.9]', "not a JSON object"),
    "binary metrics.json": ("metrics.json", b"\x00\xff\xfe\x80garbage", "not text (binary"),
    "metrics.json without status": ("metrics.json", b'{"objective": 0.9}', "status is None"),
    "binary overrides.yaml": (".hydra/overrides.yaml", b"\xff\xfe\x00", "not text (binary"),
    "overrides.yaml not a list": (".hydra/overrides.yaml", b"lr: 0.1\n", "not a list of"),
    "bad YAML overrides": (".hydra/overrides.yaml", b"- [lr=0.1\n", "not valid YAML"),
    "missing overrides.yaml": (".hydra/overrides.yaml", None, "overrides.yaml: missing"),
    "garbage val curve csv": ("csv/metrics.csv", b"\x00\x01", "csv/metrics.csv"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_one_unreadable_job_file_is_listed_and_the_rest_is_reported(case, tmp_path, caplog):
    name, content, reason = UNREADABLE[case]
    for num, lr in enumerate([0.1, 0.01, 0.001]):
        fake_job(tmp_path, num, lr)
    bad = tmp_path / "0" / name  # the best job: its val curve is drawn
    bad.unlink()
    if content is not None:
        bad.write_bytes(content)

    summary = write_report(tmp_path)

    table, text = summary_of(tmp_path)
    assert summary is not None and sorted(table["job"]) == ["0", "1", "2"]
    assert status_by_job(table)["1"] == status_by_job(table)["2"] == "completed"
    assert "## Unreadable job files" in text
    listed = [line for line in text.splitlines() if line.startswith("- job 0: ")]
    assert listed and reason in listed[0], text
    assert reason in table.set_index("job").loc["0", "unreadable"]
    assert any("job 0: unreadable" in r.getMessage() for r in caplog.records)  # on the console
    if name == "metrics.json":
        assert status_by_job(table)["0"] == "unreadable"
        assert table["best"].iloc[0] == "★" and table["job"].iloc[0] == "1"  # next best
    else:  # the record itself was read: the job keeps its result
        assert status_by_job(table)["0"] == "completed"


def test_an_unreadable_file_mode_000_is_listed_unless_root_reads_it_anyway(tmp_path):
    for num, lr in enumerate([0.1, 0.01]):
        fake_job(tmp_path, num, lr)
    (tmp_path / "0" / "metrics.json").chmod(0)
    write_report(tmp_path)
    table, text = summary_of(tmp_path)
    if os.geteuid() == 0:  # root reads a mode-000 file: nothing to list
        assert status_by_job(table) == {"0": "completed", "1": "completed"}
    else:
        assert status_by_job(table)["0"] == "unreadable" and "Permission denied" in text


def test_report_command_lists_an_unreadable_job_and_succeeds(tmp_path):
    for num, lr in enumerate([0.1, 0.01]):
        fake_job(tmp_path, num, lr)
    (tmp_path / "1" / "metrics.json").write_text('{"status": "completed", "obj')
    result = subprocess.run(
        [sys.executable, "-m", "trainlab.report", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "job 1: unreadable: metrics.json: not valid JSON" in result.stderr
    assert "## Unreadable job files" in result.stdout


@pytest.mark.parametrize("umask,mode", [(0o002, 0o664), (0o022, 0o644)], ids=["002", "022"])
def test_report_files_have_the_umasks_mode(umask, mode, tmp_path):
    for num, lr in enumerate([0.1, 0.01, 0.001]):
        fake_job(tmp_path, num, lr)
    old = os.umask(umask)
    try:
        write_report(tmp_path)
    finally:
        os.umask(old)
    written = ["summary.csv", "summary.md", "objective_vs_lr.png", "val_curves.png"]
    for name in written:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_never_ran_follows_the_grid_and_the_search():
    grid = SweepPlan(grid=[["lr=0.1"], ["lr=0.01"], ["lr=0.001"]])
    # job 0 started; job 1's overrides cannot be read but its directory exists
    assert grid.never_ran({"0": ["lr=0.1"], "1": None}) == [("2", ["lr=0.001"])]
    search = SweepPlan(trials=4, earlier=frozenset({"0", "1"}))  # n_trials: the study's total
    assert search.never_ran({"0": [], "1": [], "2": ["lr=0.3"]}) == [("", None)]


# --- a job that dies is recorded and the sweep goes on ------------------------------------


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
@pytest.mark.parametrize("fork", ["1", "0"], ids=["forked", "fresh Python"])
def test_joblib_worker_killed_mid_job_is_recorded_failed_and_the_sweep_goes_on(tmp_path, fork):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "+callbacks.kill._target_=kill_at_step.KillAtStep",
        "+callbacks.kill.step=2,100000",  # job 0 is killed (-9) after step 2; job 1 never is
        *FAST,
        f"hydra.sweep.dir={sweep}",
        env={**HELPERS, "TRAINLAB_FORK_JOBS": fork},  # a forked job or a fresh Python
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TerminatedWorkerError" not in result.stdout + result.stderr
    jobs = jobs_of(sweep)
    assert jobs["1"]["status"] == "completed"
    dead = jobs["0"]
    assert dead["status"] == "failed" and dead["worker_exit_code"] == -signal.SIGKILL
    assert "worker process running this job died: killed by SIGKILL" in dead["error"]
    assert dead["plan"]["batch_size"] == 64  # what the job had recorded is kept
    table, text = summary_of(sweep)
    assert status_by_job(table) == {"1": "completed", "0": "failed"}
    assert "killed by SIGKILL" in text


JOBLIB_REFUSED = {
    "settings joblib's pool only": (
        ["hydra.launcher.n_jobs=2", "hydra.launcher.timeout=1", "hydra.launcher.backend=threading"],
        "Error: hydra.launcher.backend=threading hydra.launcher.timeout=1.0: this launcher runs "
        "each job in a process of its own, so of joblib's settings only hydra.launcher.n_jobs "
        "applies. Leave the others out. Nothing was written.",
    ),
    "n_jobs=0": (["hydra.launcher.n_jobs=0"], "Error: hydra.launcher.n_jobs=0 must be a whole"),
}


@pytest.mark.parametrize("case", sorted(JOBLIB_REFUSED))
@pytest.mark.parametrize("full_error", [False, True], ids=["plain", "HYDRA_FULL_ERROR"])
def test_joblib_settings_that_do_not_apply_are_refused_before_anything_is_written(
    case, full_error, tmp_path
):
    settings, message = JOBLIB_REFUSED[case]
    sweep = tmp_path / "new" / "sweep"  # neither it nor its parent may be left behind
    result = run_cli(
        "-m",
        "hydra/launcher=joblib",
        *settings,
        "lr=1e-3,1e-2",
        "max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        env={"HYDRA_FULL_ERROR": "1"} if full_error else {},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr
    assert ("Traceback" in result.stderr) == full_error, result.stderr[-3000:]
    assert "could not write the sweep report" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []


# --- a sweep stopped by a signal writes its report ------------------------------------------


def test_a_sweep_process_that_fails_before_pandas_is_loaded_still_writes_its_report(tmp_path):
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, 0.1)
    # the sweep process of hydra/launcher=joblib trains nothing: pandas is first imported by
    # the report, on the way out
    script = f"""
from hydra import compose, initialize_config_dir
from trainlab.report import SweepReport
with initialize_config_dir(config_dir={str(ROOT / "conf")!r}, version_base="1.3"):
    cfg = compose("train", ["hydra/launcher=joblib", "hydra.sweep.dir={sweep}"], True)
SweepReport().on_multirun_start(cfg)
raise RuntimeError("the sweep failed")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert "RuntimeError: the sweep failed" in result.stderr
    assert "could not write the sweep report" not in result.stderr, result.stderr[-3000:]
    table, text = summary_of(sweep)
    assert status_by_job(table) == {"0": "completed"}
    assert "its process exited" in text


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_basic_sweep_stopped_by_a_signal_reports_interrupted_and_never_ran(signum, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "lr=0.01,0.02,0.03", *LONG, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(
        train_cmd(*args), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(sweep / "0" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert not (sweep / "1").exists()  # the next job did not start
    assert jobs_of(sweep)["0"]["status"] == "interrupted"
    table, text = summary_of(sweep)
    assert status_by_job(table) == {"0": "interrupted", "1": "never ran", "2": "never ran"}
    assert f"stopped by {signum.name}" in text
    assert "- job 2: `lr=0.03 " in text  # named with its overrides


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_joblib_sweep_stopped_by_sigterm_stops_its_jobs_with_a_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "lr=0.01,0.02"]
    proc = subprocess.Popen(
        train_cmd(*args, *LONG, f"hydra.sweep.dir={sweep}"),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(sweep / "0" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGTERM)  # to the sweep process only: it passes it on
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    record = jobs_of(sweep)["0"]
    assert record["status"] == "interrupted" and record["error"].startswith("stopped by SIGTERM")
    table, text = summary_of(sweep)
    assert status_by_job(table) == {"0": "interrupted", "1": "never ran"}
    assert "stopped by SIGTERM" in text


# --- Optuna: diverged and dead jobs are failed trials ----------------------------------------


def load_trials(sweep: Path):
    return load_sweep_study(sweep).trials


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_diverged_optuna_trial_is_failed_and_never_the_best(tmp_path):
    import optuna

    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "lr=0.01,1e6",  # a choice: TPE's seeded start draws both
        "optimizer=sgd",
        *FAST,
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = {t.params["lr"]: t for t in load_trials(sweep)}
    assert set(trials) == {0.01, 1e6}, trials
    diverged = trials[1e6]
    assert diverged.state == optuna.trial.TrialState.FAIL and diverged.value is None
    assert diverged.user_attrs["trainlab_status"] == "diverged"
    assert trials[0.01].state == optuna.trial.TrialState.COMPLETE
    assert load_sweep_study(sweep).best_trial.params["lr"] == 0.01
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] > 0


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_optuna_journal_gets_the_umasks_mode_so_the_group_can_continue_the_study(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        train_cmd(
            "-m",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=1",
            "max_epochs=1",
            "trainer.limit_train_batches=2",
            "logger=none",
            f"hydra.sweep.dir={sweep}",
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o002),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert stat.S_IMODE((sweep / "optuna.journal").stat().st_mode) == 0o664
    assert len(load_trials(sweep)) == 1
    assert stat.S_IMODE((sweep / "summary.md").stat().st_mode) == 0o664  # as every other file


def test_an_existing_optuna_db_is_left_as_it_is(tmp_path):
    from trainlab.search.storage import create_sqlite_file

    db = tmp_path / "optuna.db"
    db.write_bytes(b"the study")
    db.chmod(0o600)
    create_sqlite_file(f"sqlite:///{db}")
    assert db.read_bytes() == b"the study" and stat.S_IMODE(db.stat().st_mode) == 0o600
    create_sqlite_file(f"sqlite:///{tmp_path / 'new.db'}")
    assert (tmp_path / "new.db").read_bytes() == b""
    create_sqlite_file("sqlite:///:memory:")  # no file, and no error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.db", "optuna.db"]


def readme_search_space_examples() -> list[str]:
    """Every command line of a README.md code block, and every `code` span of its text, that
    sets hydra.sweeper.params."""
    blocks = re.split(r"^```.*$", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    examples = [line for block in blocks[1::2] for line in block.splitlines()]
    examples += [span for text in blocks[::2] for span in re.findall(r"`([^`\n]+)`", text)]
    return [example for example in examples if "hydra.sweeper.params" in example]


def test_readmes_search_space_examples_compose_and_give_optuna_a_distribution(tmp_path):
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from trainlab.search.space import distribution_of

    examples = readme_search_space_examples()
    assert examples, "README.md has no hydra.sweeper.params example any more"
    for example in examples:
        words = shlex.split(example)  # as the shell hands them to train.py
        overrides = [w for w in words if w not in ("python", "train.py", "-m", "--multirun")]
        if not any(w.startswith("hparams_search=") for w in overrides):
            overrides.insert(0, "hparams_search=optuna")
        cfg = compose_run(overrides, tmp_path)  # a sweep value here: "requires --multirun"
        params = [w.split("=", 1) for w in overrides if w.startswith("hydra.sweeper.params.")]
        assert params, example
        for key, given in params:
            name = key.removeprefix("hydra.sweeper.params.")
            value = cfg.hydra.sweeper.params[name]
            assert value == given.strip("'\""), example  # the sweeper gets it as written
            override = OverridesParser.create().parse_override(f"{name}={value}")
            distribution = distribution_of(override)
            assert isinstance(distribution, optuna.distributions.BaseDistribution), example


@pytest.mark.slow
def test_optuna_trial_whose_worker_dies_is_failed_and_the_study_goes_on(tmp_path):
    import optuna

    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=1",
        "+callbacks.kill._target_=kill_at_step.KillAtStep",
        "+callbacks.kill.step=2",  # every trial's worker is killed (-9)
        *FAST,
        f"hydra.sweep.dir={sweep}",
        env=HELPERS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_trials(sweep)
    assert len(trials) == 2
    assert all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert all("killed by SIGKILL" in t.user_attrs["trainlab_error"] for t in trials)
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] is None


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_optuna_sweep_stopped_by_sigterm_fails_the_trial_in_flight_and_counts_the_rest(tmp_path):
    import optuna

    sweep = tmp_path / "sweep"
    args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=4", *LONG]
    proc = subprocess.Popen(
        train_cmd(*args, f"hydra.sweep.dir={sweep}"),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(sweep / "0" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    (trial,) = load_trials(sweep)
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["trainlab_status"] == "interrupted"
    table, text = summary_of(sweep)
    assert list(table["status"]) == ["interrupted"] + ["never ran"] * 3
    assert "3 trials of the search were never drawn" in text
