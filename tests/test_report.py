"""The sweep report on a synthetic sweep directory: rows, order, best mark, plots, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import yaml

from trainlab.report import write_report


def fake_job(sweep: Path, num: int, overrides: dict, status: str | None, objective=None):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()])
    )
    if status is None:  # started, not finished
        return
    record = {
        "status": status,
        "objective": objective if status == "completed" else -1e9,
        "optimized_metric": "val/acc_best",
        "direction": "maximize",
        "metrics": {"test/acc": objective, "val/acc_best": objective}
        if status == "completed"
        else {},
        "hparams": {"optimizer": "adam", "lr": 0.001, "batch_size": 64, **overrides},
        "duration_s": 1.0,
        "trained": {"epochs": 3},
    }
    if status != "completed":
        record["error"] = f"{status} on purpose"
    (job / "metrics.json").write_text(json.dumps(record))
    if status == "completed":
        (job / "csv").mkdir()
        pd.DataFrame(
            {
                "epoch": [0, 1, 2],
                "step": [10, 20, 30],
                "val/loss": [1.0, 0.5, 0.4],
                "val/acc": [0.5, 0.7, objective],
            }
        ).to_csv(job / "csv" / "metrics.csv", index=False)


def make_sweep(sweep: Path) -> None:
    num = 0
    for optimizer in ("sgd", "adam"):
        for lr in (1e-05, 0.01, 0.1):  # Hydra writes 1e-5 as "1e-05", which YAML reads as text
            for batch_size in (32, 128):
                objective = 0.5 + lr + (0.1 if optimizer == "adam" else 0) + batch_size / 10000
                fake_job(
                    sweep,
                    num,
                    {"optimizer": optimizer, "lr": lr, "batch_size": batch_size},
                    "completed",
                    objective,
                )
                num += 1
    fake_job(sweep, num, {"optimizer": "sgd", "lr": 10.0, "batch_size": 32}, "diverged")
    fake_job(sweep, num + 1, {"optimizer": "sgd", "lr": 10.0, "batch_size": 128}, "failed")
    fake_job(sweep, num + 2, {"optimizer": "adam", "lr": 1e-05, "batch_size": 32}, None)


def test_report_rows_order_best_mark_and_plots(tmp_path):
    make_sweep(tmp_path)
    summary_md = write_report(tmp_path)
    table = pd.read_csv(tmp_path / "summary.csv")
    assert len(table) == 15
    assert list(table["status"][-3:]) == ["diverged", "failed", "unfinished"]
    done = table[table["status"] == "completed"]
    assert list(done["objective"]) == sorted(done["objective"], reverse=True)
    assert table["best"].iloc[0] == "★" and table["best"].iloc[1:].isna().all()
    best = table.iloc[0]
    assert (best["optimizer"], best["lr"], best["batch_size"]) == ("adam", 0.1, 128)
    assert {"optimizer", "lr", "batch_size", "test/acc", "epochs", "duration_s"} <= set(table)
    assert table["lr"].dtype.kind == "f"  # numbers, also where read from "lr=1e-05"

    text = summary_md.read_text()
    assert "best: job" in text and "1 diverged" in text and "1 unfinished" in text
    for png in ("objective_vs_lr.png", "heatmap_lr_batch_size.png", "val_curves.png"):
        assert f"({png})" in text
        image = matplotlib.image.imread(tmp_path / png)
        assert image.shape[0] > 200 and image.shape[1] > 200


def test_report_command_on_any_sweep_dir(tmp_path):
    make_sweep(tmp_path)
    ok = subprocess.run(
        [sys.executable, "-m", "trainlab.report", str(tmp_path)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "Sweep report" in ok.stdout and (tmp_path / "summary.md").exists()
    missing = subprocess.run(
        [sys.executable, "-m", "trainlab.report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
