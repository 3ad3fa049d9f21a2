"""Runs that stop early still finish properly: training that ends after optimizer steps no
validation saw (max_steps, max_time, early stopping, the last epoch of a
check_val_every_n_epoch run) validates once more, inside fit, so that the objective, the best
checkpoint and the test use the final weights; never two validations of the same step."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import ROOT, run_cli
from trainlab.checks import ConfigError
from trainlab.run import train

# digits at batch 64 (conftest's BASELINE): 19 optimizer steps an epoch
STEPS_PER_EPOCH = 19
LOG = [
    "logger=none",
    "+callbacks.vlog._target_=test_stops_early.ValidationLog",
    "+callbacks.vlog.path=${paths.output_dir}/validations.jsonl",
]
HELPERS = {"PYTHONPATH": str(ROOT / "tests")}


class ValidationLog(Callback):
    """One line per validation inside fit: the step, epoch and training batch it saw."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        seen = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "batch_idx": trainer.fit_loop.epoch_loop.batch_idx,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if "val/" in k},
        }
        with self.path.open("a") as f:
            f.write(json.dumps(seen) + "\n")


class StopAtBatch(Callback):
    """Ask to stop (trainer.should_stop) after training batch `batch` of the first epoch."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.batch:
            trainer.should_stop = True


def validations(out: Path) -> list[dict]:
    path = out / "validations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def completed(compose_in, *overrides: str) -> tuple[Path, dict]:
    cfg = compose_in(*LOG, *overrides)
    train(cfg)
    out = Path(cfg.paths.output_dir)
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "completed", record.get("error")
    return out, record


def assert_final_weights_used(out: Path, record: dict) -> None:
    """The last validation saw the last step, and the objective and the best checkpoint come
    from the validations that ran (the best-so-far includes the final weights)."""
    seen = validations(out)
    steps = record["trained"]["optimizer_steps"]
    assert seen[-1]["step"] == steps
    metric = record["optimized_metric"].removesuffix("_best")
    values = [v["metrics"][metric] for v in seen]
    best = max(values) if record["direction"] == "maximize" else min(values)
    assert record["objective"] == pytest.approx(best)
    checkpoint = record["trained"]["best_checkpoint"]
    if checkpoint is not None:
        saved_at = torch.load(checkpoint, weights_only=False)["global_step"]
        assert saved_at in [v["step"] for v in seen if v["metrics"][metric] == best]


# (overrides, the steps validated in fit)
CASES = {
    "max_steps mid-epoch": (["trainer.max_steps=25"], [19, 25]),
    "max_steps at an epoch end": (["trainer.max_steps=19"], [19]),
    "max_steps at the second epoch end": (["trainer.max_steps=38"], [19, 38]),
    "max_epochs, nothing early": (["max_epochs=2"], [19, 38]),
    "val_check_interval, max_steps between checks": (
        ["trainer.val_check_interval=7", "trainer.max_steps=10"],
        [7, 10],
    ),
    "val_check_interval, max_steps on a check": (
        ["trainer.val_check_interval=5", "trainer.max_steps=10"],
        [5, 10],
    ),
    "check_val_every_n_epoch, the last epoch is skipped": (
        ["max_epochs=4", "trainer.check_val_every_n_epoch=3"],
        [57, 76],
    ),
    "check_val_every_n_epoch, max_steps in a skipped epoch": (
        ["trainer.max_steps=25", "trainer.check_val_every_n_epoch=3"],
        [25],
    ),
    "check_val_every_n_epoch larger than the run": (
        ["max_epochs=2", "trainer.check_val_every_n_epoch=5"],
        [38],
    ),
    "accumulation: max_steps counts optimizer steps": (
        ["micro_batch_size=16", "trainer.max_steps=7"],
        [7],
    ),
    "a stop asked mid-accumulation waits for the step": (
        [
            "micro_batch_size=16",
            "+callbacks.stop._target_=test_stops_early.StopAtBatch",
            "+callbacks.stop.batch=5",
        ],
        [2],
    ),
    "early stopping after its validation": (
        [
            "callbacks=early_stopping",
            "callbacks.early_stopping.monitor=val/loss",
            "callbacks.early_stopping.patience=1",
            "callbacks.early_stopping.min_delta=0.05",
        ],
        [19, 38, 57, 76],
    ),
}


@pytest.mark.parametrize("overrides, validated", list(CASES.values()), ids=list(CASES))
def test_training_that_ends_early_validates_its_final_weights_once(
    compose_in, overrides, validated
):
    out, record = completed(compose_in, *overrides)
    seen = validations(out)
    assert [v["step"] for v in seen] == validated  # once per step, the last one included
    assert record["trained"]["optimizer_steps"] == validated[-1]
    accumulation = record["plan"]["accumulate_grad_batches"]
    assert (seen[-1]["batch_idx"] + 1) % accumulation == 0  # after a whole optimizer step
    assert_final_weights_used(out, record)


def test_max_time_validates_the_last_step(compose_in):
    out, record = completed(
        compose_in, "+trainer.max_time=00:00:00:01", "max_epochs=100000", "micro_batch_size=16"
    )
    seen = validations(out)
    steps = record["trained"]["optimizer_steps"]
    assert steps < 100000 * STEPS_PER_EPOCH
    assert len({v["step"] for v in seen}) == len(seen)  # no step validated twice
    assert (seen[-1]["batch_idx"] + 1) % 4 == 0 or steps % STEPS_PER_EPOCH == 0
    assert_final_weights_used(out, record)


def test_early_stopping_mid_epoch_stops_right_after_a_validation(compose_in):
    out, record = completed(
        compose_in,
        "callbacks=early_stopping",
        "callbacks.early_stopping.monitor=val/loss",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=0.05",
        "trainer.val_check_interval=7",
    )
    seen = validations(out)
    assert record["trained"]["epochs"] < 20  # it did stop early
    assert seen[-1]["step"] % STEPS_PER_EPOCH in (7, 14)  # a val_check_interval batch
    assert_final_weights_used(out, record)


def test_gpt_with_max_steps_inside_its_only_epoch_is_completed(compose_in):
    out, record = completed(
        compose_in,
        "experiment=gpt_small",
        "trainer.max_steps=20",
        "model.net.n_layer=1",
        "data.max_bytes=200000",
    )
    assert [v["step"] for v in validations(out)] == [20]
    assert "val/loss_best" in record["metrics"] and "test/loss" in record["metrics"]
    assert_final_weights_used(out, record)


def test_validation_off_with_a_val_objective_is_refused(compose_in):
    cfg = compose_in(*LOG, "trainer.limit_val_batches=0", "trainer.max_steps=5")
    with pytest.raises(ConfigError, match=r"trainer.limit_val_batches=0 turns validation off"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # refused before any work


def test_validation_off_with_a_test_objective_trains_and_tests_the_final_weights(compose_in):
    out, record = completed(
        compose_in,
        "trainer.limit_val_batches=0",
        "trainer.max_steps=5",
        "optimized_metric=test/acc",
        "callbacks=none",
    )
    assert validations(out) == []
    assert record["trained"]["optimizer_steps"] == 5 and "test/acc" in record["metrics"]


@pytest.mark.slow  # over 10 s: the default suite stays under ~10 minutes
def test_a_resumed_max_steps_run_validates_its_last_step_like_an_unbroken_one(tmp_path):
    unbroken, stopped = tmp_path / "unbroken", tmp_path / "stopped"

    def args(run: Path) -> list[str]:  # the log's path spelled out: resume reads it back
        log = [*LOG[:2], f"+callbacks.vlog.path={run}/validations.jsonl"]
        return [*log, "trainer.max_steps=25", "deterministic=true", f"hydra.run.dir={run}"]

    assert run_cli(*args(unbroken), env=HELPERS).returncode == 0
    # SIGTERM after batch 2 of epoch 1 (step 22): last.ckpt there, then resume to step 25
    result = run_cli(
        *args(stopped),
        "+callbacks.stop._target_=kill_at_step.SigtermAtBatch",
        "+callbacks.stop.epoch=1",
        "+callbacks.stop.batch=2",
        env=HELPERS,
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-2000:]
    resumed = run_cli(f"resume={stopped}", env=HELPERS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    record = json.loads((stopped / "metrics.json").read_text())
    expected = json.loads((unbroken / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["trained"]["resumed_from"]["global_step"] == 22
    assert [v["step"] for v in validations(stopped)] == [19, 25]
    assert record["objective"] == pytest.approx(expected["objective"])
    assert_final_weights_used(stopped, record)


@pytest.mark.slow
def test_ddp_ranks_validate_the_last_step_together(tmp_path):
    run = tmp_path / "run"
    result = run_cli(
        *LOG, "trainer=ddp_cpu", "trainer.max_steps=13", f"hydra.run.dir={run}", env=HELPERS
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert [v["step"] for v in validations(run)] == [13, 13]  # one line per rank
    assert_final_weights_used(run, record)


@pytest.mark.parametrize(
    ("epochs_done", "step", "max_epochs", "max_steps", "finished"),
    [
        (1, 25, 20, 25, True),  # a max_steps run stopped during its test
        (1, 24, 20, 25, False),
        (20, 380, 20, -1, True),
        (3, 57, 20, -1, False),
        (3, 57, 20, None, False),
    ],
)
def test_a_run_that_reached_max_steps_only_finishes_when_resumed(
    epochs_done, step, max_epochs, max_steps, finished
):
    from trainlab.run import trained_to_the_end

    checkpoint = {
        "global_step": step,
        "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": epochs_done}}}},
    }
    assert trained_to_the_end(checkpoint, max_epochs, max_steps) is finished
