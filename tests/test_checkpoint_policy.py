"""When the run's checkpoints reach the disk (trainlab.callbacks.checkpointing) and what the
CSV logger holds when (trainlab.csv_logger): few writes, nothing a resume or the record
needs ever missing."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger

from trainlab.callbacks import checkpointing
from trainlab.callbacks.checkpointing import BestModelCheckpoint, LastCheckpoint, snapshot
from trainlab.csv_logger import CSVLogger

STEPS_PER_EPOCH = 8  # BoringModel: 64 samples, batch 8


class Scored(BoringModel):
    """Logs `val/score` from a fixed list, one value per epoch, and `train/loss` per step."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(64, 32), batch_size=8)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(16, 32), batch_size=8)

    def training_step(self, batch, batch_idx):
        loss = self.step(batch)
        self.log("train/loss", loss)
        return loss

    def on_validation_epoch_end(self) -> None:
        score = self.scores[min(self.current_epoch, len(self.scores) - 1)]
        self.log("val/score", score)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(tmp_path: Path, callbacks: list, epochs: int = 3, scores=(0.1,), **trainer) -> L.Trainer:
    """A quiet Trainer over `Scored(scores)`; `trainer` adds or replaces its arguments."""
    arguments = {
        "default_root_dir": tmp_path,
        "max_epochs": epochs,
        "callbacks": callbacks,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        **trainer,
    }
    built = L.Trainer(**arguments)
    built.fit(Scored(list(scores)))
    return built


def counted_saves(last: LastCheckpoint) -> list[int]:
    """The global steps at which `last` will write last.ckpt, filled in as the run goes."""
    steps: list[int] = []
    original = last.save_now

    def counted(trainer):
        steps.append(trainer.global_step)
        original(trainer)

    last.save_now = counted
    return steps


def saves_of(tmp_path: Path, last: LastCheckpoint, others=(), **kwargs) -> list[int]:
    """The global steps at which `last` wrote last.ckpt over a run."""
    steps = counted_saves(last)
    fit(tmp_path, [*others, last], **kwargs)
    assert (tmp_path / "last.ckpt").is_file()
    return steps


# --- last.ckpt ------------------------------------------------------------------------------


def test_last_is_saved_every_n_steps_and_when_training_ends(tmp_path):
    last = LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=10)
    assert saves_of(tmp_path, last) == [10, 20, 24]  # 3 epochs of 8 steps; not per epoch


def test_last_is_saved_once_at_the_end_with_no_trigger(tmp_path):
    last = LastCheckpoint(dirpath=str(tmp_path))
    assert saves_of(tmp_path, last) == [24]
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 24 and checkpoint["epoch"] == 2  # the final state


def test_last_is_saved_when_a_time_interval_has_passed(tmp_path, monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(checkpointing.time, "monotonic", lambda: clock["now"])

    class Tick(Callback):  # one optimizer step takes "1 s"
        def on_train_batch_end(self, *args) -> None:
            clock["now"] += 1.0

    last = LastCheckpoint(dirpath=str(tmp_path), every_s=5)
    # Tick runs first: the clock has moved when last looks
    assert saves_of(tmp_path, last, [Tick()]) == [5, 10, 15, 20, 24]


def test_the_shipped_config_saves_last_by_time_alone_whatever_the_step_speed(
    tmp_path, monkeypatch, compose_in
):
    """Shipped: once 60 s have passed, not every N steps, so a save costs at most its own
    time a minute whether a step takes 1 ms or 10 s (and a kill -9 loses at most 60 s)."""
    from hydra.utils import instantiate

    cfg = compose_in(baseline=False)
    clock = {"now": 0.0, "step_s": 0.0}
    monkeypatch.setattr(checkpointing.time, "monotonic", lambda: clock["now"])

    class Tick(Callback):
        def on_train_batch_end(self, *args) -> None:
            clock["now"] += clock["step_s"]

    # 30 epochs of 8 steps: 240 steps of 1 ms, 0.5 s (120 s in all) or 10 s
    for step_s, expected in ((0.001, [240]), (0.5, [120, 240]), (10.0, list(range(6, 241, 6)))):
        clock.update(now=0.0, step_s=step_s)
        run_dir = tmp_path / f"step_{step_s}"
        last = instantiate(cfg.callbacks.checkpoint_last, dirpath=str(run_dir))
        assert saves_of(run_dir, last, [Tick()], epochs=30) == expected, step_s


def test_last_is_never_saved_between_the_micro_batches_of_an_accumulated_step(tmp_path):
    last = LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=3)
    # 8 batches per epoch, 2 per optimizer step: steps 4, 8, 12 by epoch ends
    assert saves_of(tmp_path, last, accumulate_grad_batches=2) == [3, 6, 9, 12]
    last = LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=1)
    assert saves_of(tmp_path, last, accumulate_grad_batches=2) == list(range(1, 13))


def test_last_is_saved_at_the_epoch_where_early_stopping_stops(tmp_path):
    stop = EarlyStopping(monitor="val/score", mode="max", patience=1)
    last = LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=0)
    steps = saves_of(tmp_path, last, [stop], epochs=10, scores=[0.1, 0.5, 0.4, 0.3, 0.2])
    assert steps == [24]  # stopped after epoch 2, the first without improvement


def test_last_is_saved_at_max_steps(tmp_path):
    last = LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=7)
    assert saves_of(tmp_path, last, epochs=10, max_steps=13) == [7, 13]


# --- the best checkpoint ------------------------------------------------------------------


def best_and_last(tmp_path: Path, **best_kwargs) -> tuple[BestModelCheckpoint, LastCheckpoint]:
    best = BestModelCheckpoint(
        dirpath=str(tmp_path), filename="epoch_{epoch:03d}", monitor="val/score", mode="max",
        save_top_k=1, auto_insert_metric_name=False, **best_kwargs,
    )  # fmt: skip
    return best, LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=20)


def check_named_best_on_disk(last: LastCheckpoint, tmp_path: Path) -> list[bool]:
    """After every save of last.ckpt: whether the best file it names is on disk."""
    seen: list[bool] = []
    original = last.save_now

    def saved(trainer) -> None:
        original(trainer)
        states = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
        named = [s["best_model_path"] for k, s in states.items() if "BestModel" in k]
        seen.extend(Path(p).is_file() for p in named if p)

    last.save_now = saved
    return seen


def named_best(path: Path) -> str:
    states = torch.load(path, weights_only=False)["callbacks"]
    return next(Path(s["best_model_path"]).name for k, s in states.items() if "BestModel" in k)


@pytest.mark.parametrize("trigger", ["steps", "seconds"])
def test_a_save_due_at_an_epochs_last_step_waits_for_its_validation(tmp_path, monkeypatch, trigger):
    clock = {"now": 0.0}
    monkeypatch.setattr(checkpointing.time, "monotonic", lambda: clock["now"])

    class Tick(Callback):
        def on_train_batch_end(self, *args) -> None:
            clock["now"] += 1.0

    best = best_and_last(tmp_path)[0]
    every = {"every_n_train_steps": 8} if trigger == "steps" else {"every_s": 8}
    last = LastCheckpoint(dirpath=str(tmp_path), **every)
    seen = []
    original = last.save_now
    last.save_now = lambda trainer: (
        original(trainer),
        seen.append(named_best(tmp_path / "last.ckpt")),
    )
    steps = saves_of(tmp_path, last, [Tick(), best], scores=[0.1, 0.5, 0.7])
    # each epoch's last step (8, 16, 24) saves once, after that epoch's validation: the file
    # names the epoch's own improvement, and the run's last.ckpt its final best
    assert steps == [8, 16, 24]
    assert seen == ["epoch_000.ckpt", "epoch_001.ckpt", "epoch_002.ckpt"]
    assert (tmp_path / "epoch_002.ckpt").is_file()


SCORES = [0.1, 0.5, 0.3, 0.7, 0.6, 0.8, 0.2]  # improvements at epochs 0, 1, 3, 5


def test_the_best_checkpoint_holds_the_best_epoch_and_only_it_remains(tmp_path):
    best, last = best_and_last(tmp_path)
    weights_at = {}

    class Record(Callback):  # the weights as they were when each epoch's score came in
        def on_validation_end(self, trainer, pl_module) -> None:
            weights_at[trainer.current_epoch] = pl_module.layer.weight.detach().clone()

    writes = []
    original = best.write_pending
    best.write_pending = lambda trainer, failing=False: (
        writes.append(best._pending is not None),
        original(trainer, failing),
    )
    named = check_named_best_on_disk(last, tmp_path)
    fit(tmp_path, [Record(), best, last], epochs=len(SCORES), scores=SCORES)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.ckpt")) == ["epoch_005.ckpt"]
    assert best.best_model_score.item() == pytest.approx(0.8)
    saved = torch.load(tmp_path / "epoch_005.ckpt", weights_only=False)
    assert torch.equal(saved["state_dict"]["layer.weight"], weights_at[5])
    assert saved["epoch"] == 5
    # last.ckpt at steps 20 and 40 (mid-epoch 2 and 4) and at the end: each found the best it
    # named on disk; of the 4 improvements (epochs 0, 1, 3, 5) epoch 0's was replaced
    # in memory by epoch 1's before any save needed it, and only 3 were written
    assert len(named) == 3 and all(named)
    assert sum(writes) == 3


@pytest.mark.parametrize("trigger", ["steps", "time"])
def test_a_best_checkpoint_by_steps_or_time_still_saves_during_the_epoch(tmp_path, trigger):
    """The best checkpoint skips Lightning's per-step checks only when it saves after
    validations alone; given steps or a time interval, it saves as Lightning does."""
    from datetime import timedelta

    every = {"every_n_train_steps": 4} if trigger == "steps" else {}
    every = every or {"train_time_interval": timedelta(seconds=0)}
    best = BestModelCheckpoint(
        dirpath=str(tmp_path), filename="step_{step}", monitor="train/loss", mode="min",
        save_top_k=-1, auto_insert_metric_name=False, **every,
    )  # fmt: skip
    steps = []
    original = best._save_checkpoint
    best._save_checkpoint = lambda trainer, path: (
        steps.append(trainer.global_step),
        original(trainer, path),
    )
    fit(tmp_path, [best], epochs=1)
    expected = [4, 8] if trigger == "steps" else list(range(1, 9))
    assert steps[: len(expected)] == expected


def test_a_checkpoint_too_large_to_hold_is_written_at_once(tmp_path):
    best, _ = best_and_last(tmp_path, keep_in_memory_mb=0)
    on_disk = []

    class Look(Callback):  # after the previous epoch, at whose end ModelCheckpoint decides
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            on_disk.append(sorted(p.name for p in tmp_path.glob("epoch_*.ckpt")))

    fit(tmp_path, [best, Look()], epochs=5, scores=SCORES)
    written = [[], ["epoch_000.ckpt"], ["epoch_001.ckpt"], ["epoch_001.ckpt"], ["epoch_003.ckpt"]]
    assert on_disk == written


def test_a_best_waiting_in_memory_is_written_when_training_fails(tmp_path):
    best, _ = best_and_last(tmp_path)

    class Fail(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 3:
                raise RuntimeError("out of luck")

    with pytest.raises(RuntimeError, match="out of luck"):
        fit(tmp_path, [best, Fail()], epochs=6, scores=SCORES)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.ckpt")) == ["epoch_001.ckpt"]


def test_a_failing_run_keeps_the_best_that_last_names_and_writes_the_waiting_one(tmp_path):
    best, last = best_and_last(tmp_path)  # last.ckpt at step 20, mid-epoch 2: names epoch 1

    class Fail(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 4:  # epoch 3's improvement is waiting in memory
                raise RuntimeError("out of luck")

    with pytest.raises(RuntimeError, match="out of luck"):
        fit(tmp_path, [best, last, Fail()], epochs=6, scores=SCORES)
    assert named_best(tmp_path / "last.ckpt") == "epoch_001.ckpt"
    on_disk = sorted(p.name for p in tmp_path.glob("epoch_*.ckpt"))
    assert on_disk == ["epoch_001.ckpt", "epoch_003.ckpt"]


def test_with_several_kept_each_improvement_is_written_as_it_comes(tmp_path):
    best = BestModelCheckpoint(
        dirpath=str(tmp_path), filename="epoch_{epoch:03d}", monitor="val/score", mode="max",
        save_top_k=2, auto_insert_metric_name=False,
    )  # fmt: skip
    held = []

    class Look(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            held.append(best._pending)

    fit(tmp_path, [best, Look()], epochs=len(SCORES), scores=SCORES)
    assert held == [None] * len(SCORES)  # nothing waits: two files are named as kept
    on_disk = sorted(p.name for p in tmp_path.glob("epoch_*.ckpt"))
    assert on_disk == ["epoch_003.ckpt", "epoch_005.ckpt"]
    for name in on_disk:
        assert torch.load(tmp_path / name, weights_only=False)["epoch"] == int(name[6:9])


def test_a_snapshot_is_a_copy_later_training_cannot_change():
    weights = torch.ones(3)
    dumped = {"state_dict": {"w": weights}, "loops": [{"step": 1}], "pair": (weights, 2)}
    copy = snapshot(dumped, limit_bytes=1e6)
    weights.add_(1)
    dumped["loops"][0]["step"] = 99
    assert torch.equal(copy["state_dict"]["w"], torch.ones(3))
    assert torch.equal(copy["pair"][0], torch.ones(3))
    assert copy["loops"][0]["step"] == 1
    assert snapshot({"w": torch.ones(3, device="meta")}, 1e6) is None  # not on the CPU
    assert snapshot({"w": torch.ones(1000)}, limit_bytes=100) is None  # too large to hold


# --- the CSV logger ---------------------------------------------------------------------------


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_the_csv_holds_every_row_lightnings_logger_writes(tmp_path):
    ours = CSVLogger(save_dir=tmp_path, name="ours", version="", flush_every_s=3600)
    theirs = LightningCSVLogger(save_dir=tmp_path, name="theirs", version="")
    for logger, where in ((ours, "ours"), (theirs, "theirs")):
        torch.manual_seed(0)
        fit(tmp_path / where, [], scores=SCORES, logger=logger, log_every_n_steps=2,
            enable_checkpointing=False)  # fmt: skip
    ours_rows = rows(tmp_path / "ours/metrics.csv")
    theirs_rows = rows(tmp_path / "theirs/metrics.csv")
    assert len(ours_rows) == len(theirs_rows) > 10
    assert [r["step"] for r in ours_rows] == [r["step"] for r in theirs_rows]


def test_the_csv_is_written_when_a_checkpoint_is_saved_not_at_every_log(tmp_path, monkeypatch):
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="", flush_every_s=3600)
    writes = []
    original = LightningCSVLogger.save
    monkeypatch.setattr(LightningCSVLogger, "save", lambda self: (writes.append(1), original(self)))
    seen_at_save = []

    class Look(Callback):  # the step after last.ckpt: the file has the rows up to it
        def on_train_batch_start(self, trainer, *args) -> None:
            if trainer.global_step == 12:
                logged = rows(tmp_path / "csv/metrics.csv")
                seen_at_save.append(max(int(r["step"]) for r in logged))

    last = LastCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=12)
    fit(tmp_path, [last, Look()], scores=SCORES, logger=logger, log_every_n_steps=1)
    assert seen_at_save == [11]  # the rows of steps 1-12 (logged as 0-11): all up to the save
    # at the two saves (steps 12 and 24) and with the row logged right after each, at the end
    # of fit: 5 writes, not one per log (~30)
    assert len(writes) == 5
    assert len(rows(tmp_path / "csv/metrics.csv")) >= 24


def test_the_csv_writes_every_row_of_the_saved_step_at_once(tmp_path):
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="", flush_every_s=3600)
    path = tmp_path / "csv/metrics.csv"
    logger.log_metrics({"train/loss": 1.0}, step=5)
    logger.save()
    assert not path.exists()  # not yet time
    logger.after_save_checkpoint(SimpleNamespace(_last_global_step_saved=6))
    assert [r["step"] for r in rows(path)] == ["5"]
    for step, name in ((6, "val/loss"), (6, "val/acc"), (7, "train/loss")):
        logger.log_metrics({name: 0.5}, step=step)
        logger.save()
    # both rows of the saved step went out with it; the next step's waits for its time
    assert [r["step"] for r in rows(path)] == ["5", "6", "6"]
    logger.finalize("success")
    assert [r["step"] for r in rows(path)] == ["5", "6", "6", "7"]


def test_a_checkpoint_saved_before_the_first_validation_is_finite_enough_to_resume():
    from trainlab.checkpoints import nonfinite_tensors

    state = {"net.w": torch.ones(2), "val_acc_best": torch.tensor(float("-inf"))}
    assert nonfinite_tensors(state) == []  # the best-so-far starts at -inf: not a divergence
    state["val_loss_best"] = torch.tensor(float("nan"))
    state["net.b"] = torch.tensor([1.0, float("inf")])
    assert nonfinite_tensors(state) == ["val_loss_best", "net.b"]
