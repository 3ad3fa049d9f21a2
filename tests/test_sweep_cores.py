"""A CPU sweep with hydra/launcher=joblib shares the cores between its parallel jobs (issue 17,
requirement 4): each job's process gets cores // jobs-at-once torch threads, unless the user
set OMP_NUM_THREADS, so n jobs at once never run n x cores threads."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import ROOT, cli_env, train_cmd
from quick import QUICK
from trainlab.search.job_start import job_environment


def test_each_parallel_job_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert job_environment(4)["OMP_NUM_THREADS"] == "2"
    assert job_environment(4)["MKL_NUM_THREADS"] == "2"
    assert job_environment(8)["OMP_NUM_THREADS"] == "1"
    assert job_environment(16)["OMP_NUM_THREADS"] == "1"  # never 0
    assert job_environment(1)["OMP_NUM_THREADS"] == "8"


def test_the_users_thread_count_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert job_environment(4)["OMP_NUM_THREADS"] == "3"


@pytest.mark.slow  # a sweep of two jobs in processes of their own
@pytest.mark.parametrize("fork", ["1", "0"], ids=["forked", "fresh Python"])
def test_a_joblib_sweeps_jobs_train_with_their_share_of_the_cores(tmp_path, fork):
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in cli_env().items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["TRAINLAB_FORK_JOBS"] = fork
    result = subprocess.run(
        train_cmd(
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "lr=1e-3,3e-3",
            *QUICK,
            "logger=none",
            f"hydra.sweep.dir={sweep}",
        ),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(records) == 2
    share = max(1, (os.cpu_count() or 1) // 2)
    assert {r["trained"]["torch_threads"] for r in records} == {share}
    assert {r["status"] for r in records} == {"completed"}
    how = "forks of this process" if fork == "1" else "fresh Python processes"
    assert f"jobs are {how}" in result.stdout + result.stderr
