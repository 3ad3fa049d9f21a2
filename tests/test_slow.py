"""Longer end-to-end runs: `pytest -m slow`."""

from __future__ import annotations

import pytest

from conftest import ROOT
from quick import QUICK
from test_cli import completed_run

pytestmark = pytest.mark.slow


DIGITS_EXAMPLES = sorted(p.stem for p in (ROOT / "conf/experiment").glob("digits_*.yaml"))


@pytest.mark.parametrize("experiment", DIGITS_EXAMPLES)
def test_worked_examples_reach_their_accuracy(experiment, tmp_path):
    _, record = completed_run(tmp_path, experiment, f"experiment={experiment}", "logger=none")
    assert record["metrics"]["test/acc"] >= 0.97


def test_gpt_small_beats_the_unigram_baseline_by_a_wide_margin(tmp_path):
    _, record = completed_run(
        tmp_path, "gpt_small", "experiment=gpt_small", "logger=none", timeout=900
    )
    metrics = record["metrics"]
    assert metrics["val/bpb"] < metrics["val/unigram_bpb"] - 1.5
    assert record["trained"]["throughput"]["device/items_per_sec"] > 0  # tokens/s


def test_ddp_on_two_cpu_processes_writes_one_verdict(tmp_path):
    run, record = completed_run(
        tmp_path, "train", "trainer=ddp_cpu", "batch_size=512", *QUICK, timeout=600
    )
    plan = record["plan"]  # 2 processes x 256, no accumulation
    assert (plan["world_size"], plan["micro_batch_size"], plan["accumulate_grad_batches"]) == (
        2,
        256,
        1,
    )
    assert (run / "train_ddp_process_1.log").exists()  # the second rank really ran
    assert len(list((tmp_path / "outputs").glob("**/metrics.json"))) == 1


def test_compile_on_cpu_trains_and_checkpoints_load_uncompiled(tmp_path):
    run, record = completed_run(
        tmp_path, "train", "compile=true", *QUICK, "logger=none", timeout=600
    )
    import torch

    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in state)  # same keys as without compile
