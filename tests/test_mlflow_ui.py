"""The README's `mlflow ui` command opens the project's store (full mlflow, the `.[mlflow]`
extra) and serves a sweep's runs over its REST API, as the web UI reads them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli
from quick import QUICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.mark.slow  # the server takes 10-50 s to start on 2 busy cores
def test_mlflow_ui_serves_the_sweeps_runs_from_the_projects_store(tmp_path):
    sweep = tmp_path / "outputs" / "sweep"
    result = run_cli(
        "-m", "logger=mlflow", "lr=1e-3,1e-2", *QUICK, f"hydra.sweep.dir={sweep}",
        project=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    # the README's command, from the project root
    server = subprocess.Popen(
        [str(mlflow), "ui", "--backend-store-uri", "sqlite:///outputs/mlflow.db"]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                found = call(base, "/experiments/search?max_results=100")
                break
            except OSError:
                assert server.poll() is None, "mlflow ui exited"
                assert time.monotonic() < deadline, "mlflow ui did not come up"
                time.sleep(1)
        (experiment,) = [e for e in found["experiments"] if e["name"] == "sweep"]
        runs = call(base, "/runs/search", {"experiment_ids": [experiment["experiment_id"]]})
        runs = runs["runs"]
        tags_of = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
        (parent,) = [
            r for r, t in zip(runs, tags_of, strict=True) if t.get("trainlab.sweep_parent")
        ]
        runs = [r for r, t in zip(runs, tags_of, strict=True) if not t.get("trainlab.sweep_parent")]
        assert all(
            {t["key"]: t["value"] for t in r["data"]["tags"]}["mlflow.parentRunId"]
            == parent["info"]["run_id"]
            for r in runs
        )  # the UI nests the jobs under the sweep's parent run
        names = sorted(r["info"]["run_name"] for r in runs)
        assert names == ["0-lr=0.001", "1-lr=0.01"]
        for run in runs:
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
            metrics = {m["key"] for m in run["data"]["metrics"]}
            assert params["lr"] == run["info"]["run_name"].split("lr=")[1]
            assert tags["status"] == "completed" and run["info"]["status"] == "FINISHED"
            assert {"val/acc", "test/acc"} <= metrics
    finally:
        server.terminate()
        server.wait(timeout=30)
