"""The benchmark compares like with like: the plain PyTorch reference and `train.py` compute the
same thing (timings are the script's business, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, cli_env
from test_cli import completed_run


def plain(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plain_digits.py"), *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_plain_loop_and_template_train_the_same_model_to_the_same_accuracy(tmp_path):
    reference = plain("--epochs", "3")
    _, record = completed_run(tmp_path, "train", "max_epochs=3", "logger=none")
    assert reference["steps"] == record["trained"]["optimizer_steps"] == 3 * 19
    # same split, initial weights, batch order and optimizer: equal up to float summation order
    assert abs(reference["val_acc_best"] - record["metrics"]["val/acc_best"]) <= 0.005
    assert abs(reference["test_acc"] - record["metrics"]["test/acc"]) <= 0.005
    assert (
        record["trained"]["loop_s"] > 0
        and record["trained"]["fit_s"] >= record["trained"]["loop_s"]
    )


@pytest.mark.slow
def test_bench_runs_and_prints_its_table(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--repeats", "1", "--skip-sweep"]
        + ["--skip-gpt", "--markdown", "--json", str(tmp_path / "bench.json")],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training loop  template/stripped" in done.stdout
    assert "| Digits MLP: whole command (s) |" in done.stdout
    numbers = json.loads((tmp_path / "bench.json").read_text())
    assert set(numbers["digits"]) >= {"plain", "template", "stripped", "ratios"}


@pytest.mark.slow  # a Lightning run of its own
def test_the_stock_lightning_peer_trains_the_same_model_as_far(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "peer_lightning_digits.py"), "--epochs", "3"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    peer = json.loads(done.stdout.strip().splitlines()[-1])
    reference = plain("--epochs", "3")
    assert peer["steps"] == reference["steps"] == 3 * 19  # the same batches per epoch
    # the same split, network and initial weights; only the batch order differs
    assert abs(peer["test_acc"] - reference["test_acc"]) <= 0.03
    assert peer["fit_s"] > 0


def test_the_sweep_numbers_recover_a_known_per_job_cost_and_start_up():
    """bench_sweep's arithmetic on made-up sweeps whose costs are known: 4 s paid once,
    0.1 s per job beyond its fit, and a joblib sweep on 2 cores."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_sweep

    fits = [0.9, 0.6] * 6
    ends, clock = [], 3.0
    for fit in fits:
        clock += fit + 0.1
        ends.append(clock)
    many = {"wall_s": 4.0 + sum(fits) + 12 * 0.1, "fit_s": fits, "ended_s": ends}
    few = {"wall_s": 4.0 + sum(fits[:4]) + 4 * 0.1, "fit_s": fits[:4], "ended_s": ends[:4]}
    joblib = {"wall_s": 4.0 + (sum(fits) + 12 * 0.1) / 2 * 1.1}
    m = bench_sweep.measure(many, few, joblib, cores=2)
    assert m["per_job_s"] == pytest.approx(0.1) and m["steady_s"] == pytest.approx(0.1)
    assert m["per_job_pct"] == pytest.approx(100 * 0.1 / 0.75)
    assert m["once_s"] == pytest.approx(4.0)
    assert m["all_in_s"] == pytest.approx((4.0 + 1.2) / 12)
    rest = sum(fits) + 1.2
    assert m["bound"] == pytest.approx((4.0 + rest) / (4.0 + rest / 2))
    assert m["jobs_phase_speedup"] == pytest.approx(2 / 1.1)
    assert m["speedup"] < m["bound"]
    lines = bench_sweep.report(m, cores=2)
    assert "PASS (<= 25)" in lines[0] and "FAIL (>= 1.7)" in lines[2]


def test_the_callback_bench_variants_leave_out_what_they_name(tmp_path, compose_in):
    """bench_callbacks' variants, composed as its sweep composes them: each leaves out its
    piece and nothing else, stripped has no callbacks and no logger, and jobs map back to
    variants in Hydra's grid order (the last override fastest)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_callbacks

    bench_callbacks.write_variants(tmp_path / "conf")
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    built = {
        name: compose_in(f"+bench_variant={name}", searchpath) for name in bench_callbacks.VARIANTS
    }
    shipped = set(built["default"].callbacks)
    assert {"checkpoint", "throughput", "progress"} <= shipped
    for piece in bench_callbacks.PIECES:
        kept = set(built[f"no_{piece}"].callbacks)
        assert piece in shipped and piece not in kept
        assert shipped - kept <= {piece, f"{piece}_last"}  # checkpoint.yaml holds two
        assert set(built[f"no_{piece}"].logger) == set(built["default"].logger) == {"csv"}
    assert not built["stripped"].get("callbacks") and not built["stripped"].get("logger")
    assert not built["no_logger"].get("logger")
    assert set(built["no_logger"].callbacks) == shipped

    # the sweep's jobs, in the order Hydra's sweeper makes them from bench_callbacks' command
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    variants = ["default", "stripped"]
    parsed = OverridesParser.create().parse_overrides(
        ["seed=42,42,42", f"+bench_variant={','.join(variants)}"]
    )
    (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    sweep = tmp_path / "sweep"
    for number, overrides in enumerate(jobs):  # 3 rounds; loop_s = job number
        (sweep / str(number) / ".hydra").mkdir(parents=True)
        (sweep / str(number) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        record = {"status": "completed", "trained": {"loop_s": float(number)}}
        (sweep / str(number) / "metrics.json").write_text(json.dumps(record))
    loops = bench_callbacks.loops_of(sweep, variants, rounds=3)
    assert loops == {"default": [2.0, 4.0], "stripped": [3.0, 5.0]}  # round 0 left out
    assert bench_callbacks.ratios(loops) == (pytest.approx(3 / 4), pytest.approx(2 / 3))
