"""Warmup schedules at known steps, through Lightning, the plot command, weight-decay groups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from torch import nn

from conftest import ROOT
from quick import QUICK
from trainlab.optim import build_optimizer, lr_multiplier, split_for_weight_decay, warmup_steps_of
from trainlab.run import train


def at(step, shape, **kw):
    args = dict(shape=shape, total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    return lr_multiplier(step, **{**args, **kw})


@pytest.mark.parametrize(
    "shape", ["warmup_cosine", "warmup_linear", "wsd", "inverse_sqrt", "constant_warmup"]
)
def test_linear_warmup_ends_at_full_lr(shape):
    assert at(0, shape) == pytest.approx(0.1)
    assert at(4, shape) == pytest.approx(0.5)
    assert at(9, shape) == pytest.approx(1.0)
    assert at(10, shape) == pytest.approx(1.0)


def test_decays_reach_min_lr_ratio_at_the_last_step():
    assert at(100, "warmup_cosine") == pytest.approx(0.1)
    assert at(55, "warmup_cosine") == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos = 0
    assert at(100, "warmup_linear") == pytest.approx(0.1)
    assert at(55, "warmup_linear") == pytest.approx(0.55)
    assert at(100, "constant_warmup") == 1.0


@pytest.mark.parametrize(
    ("decay_shape", "halfway"), [("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - 0.5**0.5)]
)
def test_wsd_is_flat_then_decays_in_its_last_fraction(decay_shape, halfway):
    kw = dict(decay_fraction=0.2, decay_shape=decay_shape)
    assert at(50, "wsd", **kw) == 1.0 and at(79, "wsd", **kw) == 1.0
    assert at(90, "wsd", **kw) == pytest.approx(0.1 + 0.9 * halfway)
    assert at(100, "wsd", **kw) == pytest.approx(0.1)


def test_inverse_sqrt_and_warmup_as_fraction():
    assert at(40, "inverse_sqrt") == pytest.approx(0.5)
    assert at(10_000, "inverse_sqrt") == pytest.approx(0.1)  # floored at min_lr_ratio
    assert warmup_steps_of(0.05, 200) == 10 and warmup_steps_of(25, 200) == 25


def test_warmup_cosine_through_lightning_ends_at_min_lr(compose_in):
    cfg = compose_in(
        "logger=none",
        "callbacks=checkpoint",
        "max_epochs=2",
        "scheduler=warmup_cosine",
        "warmup=0.25",
        "min_lr_ratio=0.1",
        "lr=0.01",
    )
    train(cfg)
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.001)
    assert last["lr_schedulers"][0]["last_epoch"] == 38  # 2 epochs x 19 optimizer steps


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_schedule_plot_command_without_training(tmp_path):
    out = tmp_path / "wsd.png"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "plot_schedule.py"),
            "data=digits",  # 19 optimizer steps an epoch at batch 64
            "batch_size=64",
            "scheduler=wsd",
            "max_epochs=30",
            f"out={out}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "570 steps" in result.stdout  # 30 epochs x 19 optimizer steps
    assert matplotlib.image.imread(out).shape[0] > 200
    refused = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_schedule.py"), "scheduler=plateau"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "cannot be plotted" in refused.stderr


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.norm = nn.LayerNorm(8)
        self.proj = nn.Linear(8, 10)
        self.bn = nn.BatchNorm1d(10)


def test_no_decay_on_biases_norm_weights_and_embeddings():
    model = TinyLM()
    decay, no_decay = split_for_weight_decay(model)
    assert {id(p) for p in decay} == {id(model.proj.weight)}
    assert {id(p) for p in no_decay} == {
        id(model.embed.weight),
        id(model.norm.weight),
        id(model.norm.bias),
        id(model.proj.bias),
        id(model.bn.weight),
        id(model.bn.bias),
    }


def test_groups_are_on_by_default_for_adamw_only():
    from functools import partial

    model = TinyLM()
    adamw = build_optimizer(model, partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1))
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]
    adam = build_optimizer(model, partial(torch.optim.Adam, lr=1e-3, weight_decay=0.1))
    assert [g["weight_decay"] for g in adam.param_groups] == [0.1]
    split = build_optimizer(model, partial(torch.optim.SGD, lr=1e-3, weight_decay=0.1), "split")
    assert len(split.param_groups) == 2
    every = build_optimizer(model, partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1), "all")
    assert len(every.param_groups) == 1


def test_adamw_run_records_both_groups(compose_in):
    cfg = compose_in(
        *QUICK,
        "logger=none",
        "callbacks=none",
        "optimizer=adamw",
        "weight_decay=0.05",
        "model=cnn",
    )
    train(cfg)
    import json

    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    groups = record["trained"]["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert groups[1]["params"] > 0
